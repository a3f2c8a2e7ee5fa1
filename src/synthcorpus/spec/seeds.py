"""``seeds``: where the seeds come from (outline, web samples, instructions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from .base import _Strict


class SampleClean(_Strict):
    """Seed hygiene (``quality/seed_clean.py``, run by the seeds stage): each text is cleaned, then dropped
    with the first reason it gets (too_short, boilerplate, a Gopher reason, duplicate); the seeds stats
    count every reason per source. Off: texts are only whitespace-normalized, length-checked and
    de-duplicated."""

    enabled: bool = Field(default=True, description="clean texts before they become seeds (false: whitespace only)")
    strip_markup: bool = Field(
        default=True,
        description="remove HTML tags (script/style/head content dropped), decode entities, remove markdown and "
                    "wiki markup (headings, emphasis, links, list markers, templates, fences), collapse whitespace",
    )
    boilerplate: bool = Field(
        default=True,
        description="remove boilerplate lines: cookie/privacy banners, 'subscribe', 'all rights reserved', login and "
                    "share prompts (en, fr, de, es, it phrase lists), navigation-only lines ('Home | About | Blog'), "
                    "HTML nav/header/footer/aside; a text mostly made of them is dropped as 'boilerplate'",
    )
    max_boilerplate_share: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="drop a text as 'boilerplate' when boilerplate lines hold more than this share of its characters "
                    "(or what is left is shorter than min_chars)",
    )
    gopher: bool = Field(
        default=True,
        description="the Gopher rules of quality/filters.py with their default thresholds (quality.heuristics "
                    "defaults, not the spec's: those are for generated documents): repeated lines and paragraphs, "
                    "top and duplicated n-grams; and the quality rules (word length, alphabetic words, symbols, "
                    "bullet and ellipsis lines) on texts of at least gopher_min_words words",
    )
    gopher_min_words: int = Field(
        default=20, ge=1,
        description="texts with fewer words get the Gopher repetition rules only (word statistics of one sentence "
                    "are noise)",
    )


# Instructions are short requests: "Write a privacy policy for my bakery" is a fine seed, so the boilerplate
# phrases are not checked on them unless the spec says so.
INSTRUCTION_CLEAN_DEFAULTS: dict[str, Any] = {"boilerplate": False}


class SampleSource(_Strict):
    """A table of texts: Parquet file, JSONL file, a local HF ``datasets`` directory (save_to_disk) or a
    directory of Parquet files; a local path (relative to the spec file) or an ``s3://`` URI."""

    path: str
    format: Literal["auto", "parquet", "jsonl", "hf"] = "auto"
    text_column: str = "text"
    sample_size: int | None = Field(default=None, ge=1, description="sample this many rows (null = all)")
    seed: int = Field(default=0, description="seed of the sample")
    min_chars: int = Field(default=20, ge=1, description="skip texts shorter than this (after cleaning)")
    clean: SampleClean = Field(
        default_factory=SampleClean,
        description="seed hygiene: markup, boilerplate, Gopher rules (instructions: boilerplate off by default)",
    )


class SeedsSpec(_Strict):
    outline: Path | None = Field(default=None, description="YAML outline: subjects -> course -> units")
    web_samples: SampleSource | None = Field(default=None, description="web extracts to cluster into topics")
    instructions: SampleSource | None = Field(default=None, description="instruction-style seeds for stories")

    @model_validator(mode="before")
    @classmethod
    def _instruction_clean_defaults(cls, data: Any) -> Any:
        """Fill instructions' unset ``clean`` fields with INSTRUCTION_CLEAN_DEFAULTS (so the canonical spec
        shows what runs)."""
        if not isinstance(data, dict) or not isinstance(data.get("instructions"), dict):
            return data
        instructions = dict(data["instructions"])
        clean = instructions.get("clean", {})
        if isinstance(clean, dict):
            instructions["clean"] = {**INSTRUCTION_CLEAN_DEFAULTS, **clean}
            data = {**data, "instructions": instructions}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SeedsSpec:
        if self.outline is None and self.web_samples is None and self.instructions is None:
            raise ValueError("expected at least one seed source: outline, web_samples or instructions")
        return self
