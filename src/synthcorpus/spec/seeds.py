"""``seeds``: where the seeds come from (outline, web samples, instructions)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import _Strict


class SampleSource(_Strict):
    """A table of texts: Parquet file, JSONL file, a local HF ``datasets`` directory (save_to_disk) or a
    directory of Parquet files; a local path (relative to the spec file) or an ``s3://`` URI."""

    path: str
    format: Literal["auto", "parquet", "jsonl", "hf"] = "auto"
    text_column: str = "text"
    sample_size: int | None = Field(default=None, ge=1, description="sample this many rows (null = all)")
    seed: int = Field(default=0, description="seed of the sample")
    min_chars: int = Field(default=20, ge=1, description="skip texts shorter than this")


class SeedsSpec(_Strict):
    outline: Path | None = Field(default=None, description="YAML outline: subjects -> course -> units")
    web_samples: SampleSource | None = Field(default=None, description="web extracts to cluster into topics")
    instructions: SampleSource | None = Field(default=None, description="instruction-style seeds for stories")

    @model_validator(mode="after")
    def _one_source(self) -> SeedsSpec:
        if self.outline is None and self.web_samples is None and self.instructions is None:
            raise ValueError("expected at least one seed source: outline, web_samples or instructions")
        return self
