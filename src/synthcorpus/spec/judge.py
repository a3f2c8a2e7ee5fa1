"""``judge``: an LLM scores every document against a rubric, weak ones are rewritten from its critique.

The judge can be another engine and model than the generator (unset fields follow ``generation``).
Scores are 0-5 per dimension (``DIMENSIONS``); ``thresholds`` say which documents are weak (rewritten,
up to ``max_rounds``); ``gate`` turns them into release expectations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Strict
from .vocabulary import JUDGE_DIMENSIONS as DIMENSIONS  # each scored 0-5 (educational value additive, FineWeb-Edu style)
from .vocabulary import SCORE_MAX
Dimension = Literal["educational_value", "coherence", "faithfulness", "audience_fit"]


class JudgeGateSpec(_Strict):
    """Release expectations on the scores (each one row of the run metrics the gate validates)."""

    min_mean: dict[Dimension, float] = Field(default_factory=dict, description="dimension -> lowest mean score allowed")
    min_p25: dict[Dimension, float] = Field(default_factory=dict, description="dimension -> lowest 25th percentile allowed")
    max_share_below: dict[Dimension, float] = Field(
        default_factory=dict, description="dimension -> highest share of scored documents below its threshold")
    max_unscored_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="highest share of documents the judge could not score")
    by: list[Literal["format", "audience"]] = Field(
        default_factory=list, description="also check min_mean per format / per audience")

    @model_validator(mode="after")
    def _ranges(self) -> JudgeGateSpec:
        for name in ("min_mean", "min_p25"):
            for dim, value in getattr(self, name).items():
                if not 0 <= value <= SCORE_MAX:
                    raise ValueError(f"{name}.{dim}: expected a score between 0 and {SCORE_MAX}, got {value}")
        for dim, value in self.max_share_below.items():
            if not 0 <= value <= 1:
                raise ValueError(f"max_share_below.{dim}: expected a share between 0 and 1, got {value}")
        return self


class JudgeSpec(_Strict):
    enabled: bool = Field(default=False, description="score every document (and refine the weak ones)")
    engine: Literal["llamacpp", "vllm", "openai"] | None = Field(default=None, description="default: generation.engine")
    model: str | None = Field(default=None, description="default: generation.model (a .gguf path, HF id or served name)")
    base_url: str | None = Field(default=None, description="openai engine: the judge's server (default: generation.openai)")
    max_tokens: int = Field(default=96, ge=16, le=4096, description="judge reply length (scores + a short critique)")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="the first ask; re-asks sample at >= 0.7")
    max_retries: int = Field(default=2, ge=0, le=10, description="re-asks after a malformed reply; then unscored")
    request_words: int = Field(default=160, ge=10, le=2000, description="words of the writing request (prompt: seed extract, topic) shown to the judge")
    document_words: int = Field(default=400, ge=20, le=8000, description="words of the document shown to the judge")
    thresholds: dict[Dimension, float] = Field(
        default_factory=lambda: {"educational_value": 2.0, "coherence": 3.0},
        description="dimension -> score below which a document is weak (rewritten, and counted by max_share_below)")
    max_rounds: int = Field(default=1, ge=0, le=5, description="rewrite rounds for weak documents (0: score only)")
    rewrite_max_tokens: int | None = Field(default=None, ge=16, le=32768, description="default: generation.max_tokens")
    gate: JudgeGateSpec = JudgeGateSpec()

    @model_validator(mode="after")
    def _thresholds(self) -> JudgeSpec:
        for dim, value in self.thresholds.items():
            if not 0 <= value <= SCORE_MAX:
                raise ValueError(f"thresholds.{dim}: expected a score between 0 and {SCORE_MAX}, got {value}")
        missing = sorted(set(self.gate.max_share_below) - set(self.thresholds))
        if missing:
            raise ValueError(f"gate.max_share_below: expected a threshold for {', '.join(missing)} in judge.thresholds")
        return self
