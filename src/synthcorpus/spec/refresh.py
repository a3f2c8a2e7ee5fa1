"""``refresh``: how a run builds on what the corpus already published (incremental versions, top-up)."""

from __future__ import annotations

from pydantic import Field

from .base import _Strict


class RefreshSpec(_Strict):
    """A refresh publishes version N+1 = version N + ``documents`` new documents: prompts already published
    are skipped, new documents are deduplicated against every published one, and the run generates more in
    bounded top-up rounds when quality stages leave fewer than requested."""

    incremental: bool = Field(default=True, description="build on the latest version; false: every run is a full rebuild")
    retire_after_failures: int = Field(
        default=2, ge=1, le=100,
        description="a prompt generated this many times without a published document is retired (never tried again)")
    expected_yield: float = Field(
        default=0.75, gt=0.0, le=1.0,
        description="share of prompts expected to end published, until a published version has measured it")
    max_overprovision: float = Field(
        default=3.0, ge=1.0, le=20.0, description="at most this many prompts per requested document, top-up included")
    top_up_rounds: int = Field(default=2, ge=0, le=10, description="extra generation rounds when quality stages drop rows")
