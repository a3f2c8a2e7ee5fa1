"""``quality``: filters, near-dedup, decontamination and the release gate's thresholds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import _Strict
from .vocabulary import LANGUAGES, REASONS, Language, gate_columns


class DecontamReference(_Strict):
    """A benchmark reference set (Parquet / JSONL / HF dataset dir, local or s3://)."""

    name: str | None = Field(default=None, description="benchmark name (default: file name)")
    path: str
    format: Literal["auto", "parquet", "jsonl", "hf"] = "auto"
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    id_column: str | None = None
    benchmark_column: str | None = Field(default=None, description="split one file into one set per value")


class DecontamSpec(_Strict):
    references: list[DecontamReference] = Field(min_length=1)
    ngram: int = Field(default=10, ge=3, le=50)
    threshold: float = Field(default=0.5, ge=0.0, lt=1.0, description="matched words / benchmark item words")
    canaries: str | None = Field(
        default=None, description="JSONL of known-contaminated docs {id, text} planted before the check; all must be caught"
    )


class NearDedupSpec(_Strict):
    """MinHash near-dedup across the whole run: signatures per shard, LSH bands, clusters, keep one."""

    enabled: bool = True
    ngram: int = Field(default=5, ge=1, le=20, description="word n-gram shingles")
    bands: int = Field(default=14, ge=1, le=64)
    rows: int = Field(default=8, ge=1, le=32, description="hashes per band; threshold ~ (1/bands)^(1/rows)")
    seed: int = 1
    verify_threshold: float | None = Field(default=0.6, ge=0.0, le=1.0, description="estimated Jaccard to confirm a pair")



class Bounds(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _order(self) -> Bounds:
        if self.min is None and self.max is None:
            raise ValueError("expected min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"expected min <= max, got {self.min} > {self.max}")
        return self


class UserExpectation(_Strict):
    """Any GX Core expectation by name, with its arguments, on one of the gate's two batches."""

    batch: Literal["documents", "run_metrics"] = "documents"
    type: str = Field(description="GX expectation name, e.g. expect_column_values_to_match_regex")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> UserExpectation:
        from .gx_catalog import load  # a JSON table: GX itself is not imported at parse time

        catalog = load()
        entry = catalog.get(self.type)
        if entry is None:
            near = [n for n in catalog if self.type.replace("expect_", "") in n][:3]
            raise ValueError(f"expected a GX expectation name, got {self.type!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        unknown = sorted(set(self.kwargs) - set(entry["arguments"]))
        if unknown:
            raise ValueError(f"{self.type}: unknown arguments {unknown}; expected some of {entry['arguments']}")
        missing = sorted(set(entry["required"]) - set(self.kwargs))
        if missing:
            raise ValueError(f"{self.type}: missing required arguments {missing}")
        column = self.kwargs.get("column")
        if column is not None and column not in gate_columns(self.batch):
            raise ValueError(f"column {column!r} is not in the {self.batch} batch; expected one of {list(gate_columns(self.batch))}")
        return self


class HeuristicsSpec(_Strict):
    """Heuristic document filters, run in ``quality/filters.py`` with one count per reason. Defaults are
    Gopher's (Rae et al. 2021, table A1) as datatrove ships them; ``null`` turns a rule off.
    "Words" are runs of letters/digits (``\\w+``); "lines" are split on newlines, "paragraphs" on blank lines."""

    min_chars: int | None = Field(
        default=None, ge=1, description="fewer characters -> too_few_chars (off: min_words bounds length already)"
    )
    max_chars: int | None = Field(default=100_000, ge=1, description="more characters -> too_many_chars")
    dup_line_frac: float | None = Field(default=0.3, ge=0.0, le=1.0, description="max share of lines repeating an earlier line")
    dup_para_frac: float | None = Field(default=0.3, ge=0.0, le=1.0, description="max share of paragraphs repeating an earlier one")
    dup_line_char_frac: float | None = Field(default=0.2, ge=0.0, le=1.0, description="max share of characters in repeated lines")
    dup_para_char_frac: float | None = Field(
        default=0.2, ge=0.0, le=1.0, description="max share of characters in repeated paragraphs"
    )
    top_ngram_char_frac: dict[int, float | None] | None = Field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16},
        description="n -> max share of characters in the most frequent repeated word n-gram (replaces the whole default)",
    )
    dup_ngram_char_frac: dict[int, float | None] | None = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> max share of characters in repeated word n-grams (replaces the whole default)",
    )
    max_symbol_word_ratio: float | None = Field(
        default=0.1, ge=0.0, le=1.0, description="max '#' characters per word, and max ellipses ('...', '…') per word"
    )
    max_bullet_lines_ratio: float | None = Field(default=0.9, ge=0.0, le=1.0, description="max share of lines starting with '-' or '•'")
    max_ellipsis_lines_ratio: float | None = Field(default=0.3, ge=0.0, le=1.0, description="max share of lines ending with an ellipsis")
    min_alpha_words_ratio: float | None = Field(
        default=0.8, ge=0.0, le=1.0, description="min share of words containing an alphabetic character"
    )
    min_mean_word_length: float | None = Field(default=3, gt=0, description="min mean characters per word")
    max_mean_word_length: float | None = Field(default=10, gt=0, description="max mean characters per word")

    @field_validator("top_ngram_char_frac", "dup_ngram_char_frac")
    @classmethod
    def _ngrams(cls, value: dict[int, float | None] | None) -> dict[int, float | None] | None:
        for n, frac in (value or {}).items():
            if not 1 <= n <= 50:
                raise ValueError(f"expected n-gram sizes between 1 and 50, got {n}")
            if frac is not None and not 0.0 <= frac <= 1.0:
                raise ValueError(f"expected a fraction between 0 and 1 for {n}-grams, got {frac}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> HeuristicsSpec:
        for low, high in (("min_chars", "max_chars"), ("min_mean_word_length", "max_mean_word_length")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"expected {low} <= {high}, got {lo} > {hi}")
        return self


class QualitySpec(_Strict):
    min_words: int = Field(default=50, ge=1)
    max_words: int = Field(default=5000, ge=1)
    drop_truncated: bool = Field(default=True, description="drop rows whose finish_reason is 'length'")
    refusal_phrases: list[str] | dict[Language, list[str]] = Field(
        default_factory=list,
        description="extra refusal/meta phrases to drop (checked in the opening): a list for every language, or language -> list",
    )
    heuristics: HeuristicsSpec = HeuristicsSpec()
    min_documents: int = Field(default=1, ge=0, description="gate: minimum documents surviving all filters")
    max_filtered_share: float = Field(default=0.5, ge=0.0, le=1.0, description="gate: maximum share of rows removed")
    max_opening_share: float | None = Field(
        default=None, gt=0.0, le=1.0, description="gate: max share of documents sharing one first-8-word opening"
    )
    min_language_match_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="gate: min share of generated docs detected in the requested language"
    )
    max_filtered_share_by_reason: dict[str, float] = Field(
        default_factory=dict, description="gate: max share of generated rows removed for one filter reason"
    )
    max_duplicate_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="gate: max share of filtered docs removed as exact or near duplicates"
    )
    max_contaminated: int | None = Field(default=None, ge=0, description="gate: max docs removed by decontamination")
    word_quantiles: dict[Literal["p05", "p25", "p50", "p75", "p95"], Bounds] = Field(
        default_factory=dict, description="gate: bounds on quantiles of the documents' word counts"
    )
    max_share: dict[Literal["format", "audience", "topic", "language"], float] = Field(
        default_factory=dict, description="gate: max share of documents one format/audience/topic/language may have"
    )
    min_share: dict[Literal["format", "audience", "topic", "language"], float] = Field(
        default_factory=dict, description="gate: min share of documents every requested format/audience/language (or present topic) must have"
    )
    expectations: list[UserExpectation] = Field(default_factory=list, description="extra GX expectations for the gate")
    near_dedup: NearDedupSpec = NearDedupSpec()
    decontamination: DecontamSpec | None = None

    @field_validator("refusal_phrases", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        # One clear message instead of one per branch of the list | dict union.
        if isinstance(value, dict):
            unknown = sorted(str(k) for k in value if k not in LANGUAGES)
            if unknown:
                raise ValueError(f"expected languages among {', '.join(LANGUAGES)} as keys, got {', '.join(unknown)}")
            lists = value.values()
        elif isinstance(value, list):
            lists = [value]
        else:
            raise ValueError(f"expected a list of phrases or a mapping language -> list of phrases, got {type(value).__name__}")
        for phrases in lists:
            if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
                raise ValueError(f"expected non-empty strings in each list of phrases, got {phrases!r}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> QualitySpec:
        if self.min_words > self.max_words:
            raise ValueError(f"expected min_words <= max_words, got {self.min_words} > {self.max_words}")
        unknown = sorted(set(self.max_filtered_share_by_reason) - set(REASONS))
        if unknown:
            raise ValueError(f"max_filtered_share_by_reason: unknown reasons {unknown}; expected some of {list(REASONS)}")
        for field_name in ("max_filtered_share_by_reason", "max_share", "min_share"):
            for key, value in getattr(self, field_name).items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{field_name}.{key}: expected a share between 0 and 1, got {value}")
        return self
