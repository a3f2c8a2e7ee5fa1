"""``prompts``: the prompt matrix (formats x audiences x languages) and its templates."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from .base import _Strict
from .vocabulary import Audience, Format, Language


class PromptsSpec(_Strict):
    formats: list[Format] = Field(min_length=1)
    audiences: list[Audience] = Field(min_length=1)
    languages: list[Language] = Field(default=["en"], min_length=1)
    template_dir: Path = Field(default=Path("../prompts"), description="directory with <language>/<format>.j2")
    seed: int = Field(default=0, description="seed of the sampling plan")
    topic_probability: float = Field(default=0.5, ge=0.0, le=1.0, description="share of prompts that name the topic")
    extract_max_tokens: int = Field(default=200, ge=16, description="seed extract budget (word/punctuation tokens)")

    @field_validator("formats", "audiences", "languages")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"expected unique entries, {', '.join(dupes)} listed more than once")
        return value
