"""``topics``: clustering and labelling of seeds into topics."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import _Strict

# Clusters whose label or keywords match one of these (case-insensitive, at the start of a word) are
# dropped, whatever their score.
DEFAULT_TOPIC_DENY = (
    "adult", "porn", "sex", "gossip", "celebrit", "rumour", "rumor", "obituar", "funeral", "condolence",
    "gambling", "casino", "betting", "jackpot", "dating", "advertis", "coupon", "spam", "horoscope", "lottery",
)


class TopicsSpec(_Strict):
    n_clusters: int | Literal["auto"] = Field(default="auto", description="clusters of web samples, or 'auto'")
    max_clusters: int = Field(default=40, ge=2, description="upper bound when n_clusters is 'auto'")
    label_samples: int = Field(default=10, ge=1, le=50, description="extracts shown to the labeler per cluster")
    label_retries: int = Field(default=2, ge=0, le=10, description="retries of a malformed label reply")
    label_max_tokens: int = Field(default=48, ge=8, le=512)
    labeler: Literal["engine", "keywords"] = Field(default="engine", description="'keywords' = c-TF-IDF only, no LLM")
    min_score: float = Field(default=3.0, ge=0, le=10, description="drop clusters scored below this (0-10)")
    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPIC_DENY), description="label substrings to drop")
    embed_batch_size: int = Field(default=64, ge=1, description="texts per embedding batch (bounds peak memory)")
    seed: int = 0

    @field_validator("n_clusters", mode="before")
    @classmethod
    def _k(cls, value: Any) -> Any:
        # One clear message instead of one per branch of the int | 'auto' union.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 2):
            return value
        raise ValueError(f"expected an integer >= 2 or 'auto', got {value!r}")
