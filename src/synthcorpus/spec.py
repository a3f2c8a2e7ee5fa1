"""The corpus spec: one YAML file in ``include/corpora/`` validated into a typed :class:`CorpusSpec`.

This module is imported at DAG parse time, so it must stay light: pydantic and PyYAML only.
Every problem is reported with the file, the dotted field path and what was expected.
Relative paths inside a spec resolve against the directory of the spec file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMATS = ("textbook", "blog_post", "wikihow", "story", "dialogue", "technical")
AUDIENCES = ("young_children", "high_school_students", "college_students", "professionals", "general_public")
LANGUAGES = ("en", "fr", "de", "es", "it")
BUNDLED_MODEL = "smollm2-135m-instruct"

Format = Literal["textbook", "blog_post", "wikihow", "story", "dialogue", "technical"]
Audience = Literal["young_children", "high_school_students", "college_students", "professionals", "general_public"]
Language = Literal["en", "fr", "de", "es", "it"]

# Clusters whose label or keywords match one of these (case-insensitive, at the start of a word) are
# dropped, whatever their score.
DEFAULT_TOPIC_DENY = (
    "adult", "porn", "sex", "gossip", "celebrit", "rumour", "rumor", "obituar", "funeral", "condolence",
    "gambling", "casino", "betting", "jackpot", "dating", "advertis", "coupon", "spam", "horoscope", "lottery",
)

STORAGE_ENV = "SYNTHCORPUS_STORAGE_URI"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class OpenAISpec(_Strict):
    """Any OpenAI-compatible server (vLLM serve, TGI, llama.cpp server, hosted). The key is never in the spec."""

    base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; else from conn_id or $OPENAI_BASE_URL")
    conn_id: str | None = Field(default=None, description="Airflow connection with host (base URL) and password (key)")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="environment variable holding the key")
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=50)


class VLLMSpec(_Strict):
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=256)
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    batch_size: int = Field(default=256, ge=1, description="prompts per LLM.chat call (one checkpoint unit)")


class KubernetesSpec(_Strict):
    """How generation pods run when ``generation.runner`` is ``kubernetes``."""

    namespace: str = "synthcorpus"
    image: str = "ghcr.io/example/synthcorpus-generator:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = "synthcorpus-generator"
    gpus_per_pod: int = Field(default=1, ge=0, le=16)
    cpu: str = "8"
    memory: str = "64Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    model_cache_pvc: str | None = Field(default="synthcorpus-model-cache", description="PVC mounted at /models")
    secrets: list[str] = Field(default_factory=list, description="Kubernetes Secret names exposed as env (envFrom)")
    startup_timeout_s: int = Field(default=900, ge=30)
    deferrable: bool = True


class GenerationSpec(_Strict):
    engine: Literal["llamacpp", "vllm", "openai"] = "llamacpp"
    runner: Literal["local", "kubernetes"] = Field(default="local", description="in-process task or one pod per shard")
    model: str = Field(
        default=BUNDLED_MODEL,
        description=f"llamacpp: '{BUNDLED_MODEL}' or a .gguf path; vllm: HF id or local dir; openai: served model name",
    )
    max_tokens: int = Field(default=384, ge=16, le=32768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.15, ge=1.0, le=2.0)
    seed: int = Field(default=0, ge=0)
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1, description="CPU threads; default: all cores")
    shard_size: int = Field(default=16, ge=1, description="max prompts per generation shard")
    target_tokens_per_shard: int | None = Field(
        default=None, ge=1, description="size shards by expected completion tokens (max_tokens per prompt) instead"
    )
    max_shards: int | None = Field(default=None, ge=1, description="cap on shards (shards grow to fit)")
    expected_load_s: float = Field(default=5.0, ge=0, description="model load time per shard, for the plan's ratio")
    expected_tokens_per_s: float = Field(default=80.0, gt=0, description="per pod/process, for the plan's ratio")
    checkpoint_rows: int = Field(default=25, ge=1, description="checkpoint finished rows every N rows ...")
    checkpoint_seconds: float = Field(default=60.0, gt=0, description="... or every T seconds")
    max_attempts: int = Field(default=3, ge=1, le=20, description="generation attempts per row (refine loop)")
    cost_per_gpu_hour: float = Field(default=0.0, ge=0, description="for the cost estimate in lineage")
    openai: OpenAISpec = OpenAISpec()
    vllm: VLLMSpec = VLLMSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()

    @model_validator(mode="after")
    def _runner(self) -> GenerationSpec:
        if self.runner == "kubernetes" and self.engine == "llamacpp" and self.kubernetes.gpus_per_pod > 0:
            raise ValueError("expected engine 'vllm' or 'openai' for GPU pods (runner 'kubernetes'), got 'llamacpp'")
        return self


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


# What the gate measures per run (see gate_stage.run_metrics): the balance of documents across these
# dimensions and these word-count quantiles.
BALANCE_DIMENSIONS = ("format", "audience", "topic", "language")
WORD_QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}

# Columns the gate's batches carry (see gate_stage), for checking user expectations at load.
GATE_COLUMNS = {
    "documents": ("text", "n_words", "n_chars", "text_hash", "prompt_id", "seed_kind", "topic", "format", "audience",
                  "language", "template", "prompt_tokens", "completion_tokens", "attempts"),
    "run_metrics": ("generated", "documents", "filtered_share", "exact_duplicates", "near_duplicates", "duplicate_rate",
                    "duplicate_text_hashes", "contaminated", "canaries_missed", "language_match_rate", "max_opening_share",
                    *(f"n_words_{q}" for q in WORD_QUANTILES),
                    *(f"{d}_{m}_share" for d in BALANCE_DIMENSIONS for m in ("max", "min"))),
}


def gate_columns(batch: str) -> tuple[str, ...]:
    """GATE_COLUMNS plus one ``filtered_share_<reason>`` run metric per filter reason."""
    if batch != "run_metrics":
        return GATE_COLUMNS[batch]
    from .quality.filters import REASONS  # light module; imported late because it imports this one

    return GATE_COLUMNS[batch] + tuple(f"filtered_share_{r}" for r in REASONS)


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
        from .quality.gx_catalog import load  # a JSON table: GX itself is not imported at parse time

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
        if self.max_filtered_share_by_reason:
            from .quality.filters import REASONS  # late: filters imports this module

            unknown = sorted(set(self.max_filtered_share_by_reason) - set(REASONS))
        if self.max_filtered_share_by_reason and unknown:
            raise ValueError(f"max_filtered_share_by_reason: unknown reasons {unknown}; expected some of {list(REASONS)}")
        for field_name in ("max_filtered_share_by_reason", "max_share", "min_share"):
            for key, value in getattr(self, field_name).items():
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{field_name}.{key}: expected a share between 0 and 1, got {value}")
        return self


class StorageSpec(_Strict):
    uri: str | None = Field(default=None, description=f"fsspec URI (file://, s3://); ${STORAGE_ENV} overrides")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(file|s3|memory)://.+", value):
            raise ValueError("expected a URI starting with file://, s3:// or memory://")
        return value


class PublishSpec(_Strict):
    rows_per_file: int = Field(default=100_000, ge=1)
    license: str = "other"


class CorpusSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="corpus id: lowercase letters, digits, _")
    description: str = ""
    schedule: str | None = Field(default=None, description="cron expression or preset like @weekly; null = manual")
    documents: int = Field(ge=1, le=100_000_000, description="number of prompts to generate")
    seeds: SeedsSpec
    topics: TopicsSpec = TopicsSpec()
    prompts: PromptsSpec
    generation: GenerationSpec = GenerationSpec()
    quality: QualitySpec = QualitySpec()
    storage: StorageSpec = StorageSpec()
    publish: PublishSpec = PublishSpec()

    # Set by load_spec, not by the YAML.
    source_path: Path | None = Field(default=None, exclude=True)

    @property
    def spec_dir(self) -> Path:
        return self.source_path.parent if self.source_path else Path.cwd()

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.spec_dir / path).resolve()

    @property
    def outline_path(self) -> Path | None:
        return self.resolve(self.seeds.outline) if self.seeds.outline is not None else None

    def resolve_uri(self, path: str) -> str:
        """A source path as a URI: s3:// (and other schemes) as given, local paths resolved to file://."""
        if "://" in path:
            return path
        return self.resolve(Path(path)).as_uri()

    @property
    def template_dir(self) -> Path:
        return self.resolve(self.prompts.template_dir)

    @property
    def dag_id(self) -> str:
        return f"synthcorpus_{self.name}"

    def storage_uri(self) -> str:
        uri = os.environ.get(STORAGE_ENV) or self.storage.uri
        if not uri:
            uri = (Path.cwd() / "synthcorpus-data").as_uri()
        return uri.rstrip("/")

    def canonical(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SpecProblem:
    file: str
    field: str
    expected: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.expected}"


class SpecError(ValueError):
    """A spec is invalid. ``problems`` lists every problem found, each naming file and field."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key: the key itself is named just before
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see CorpusSpec in src/synthcorpus/spec.py)"
    if kind in ("literal_error", "enum"):
        msg = msg.replace("Input should be", "expected one of")
    else:
        msg = msg.replace("Input should be", "expected")
    return f"{msg} (got {err.get('input')!r})"


def parse_spec(data: Any, file: str = "<spec>", source_path: Path | None = None) -> CorpusSpec:
    """Validate an already-parsed YAML document; raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(file, "(top level)", f"expected a mapping of fields, got {type(data).__name__}")])
    try:
        spec = CorpusSpec.model_validate({**data, "source_path": source_path})
    except ValidationError as exc:
        raise SpecError([SpecProblem(file, _loc(e["loc"]), _describe(e)) for e in exc.errors()]) from None
    problems = _check_files(spec, file) + _check_kubernetes(spec, file)
    if problems:
        raise SpecError(problems)
    return spec


def _check_kubernetes(spec: CorpusSpec, file: str) -> list[SpecProblem]:
    """What the API server would refuse when the pod is created (names, quantities, tolerations), caught at
    load time: a bad value must not break DAG parsing for every corpus."""
    from .kubernetes import kubernetes_problems  # regexes only

    return [
        SpecProblem(file, f"generation.kubernetes.{field}", expected)
        for field, expected in kubernetes_problems(spec.generation.kubernetes)
    ]


def _check_files(spec: CorpusSpec, file: str) -> list[SpecProblem]:
    problems = []
    if spec.outline_path is not None and not spec.outline_path.is_file():
        problems.append(SpecProblem(file, "seeds.outline", f"expected an existing YAML file, {spec.outline_path} not found"))
    local_paths = [(f"seeds.{name}.path", getattr(spec.seeds, name).path)
                   for name in ("web_samples", "instructions") if getattr(spec.seeds, name) is not None]
    decontam = spec.quality.decontamination
    if decontam is not None:
        local_paths += [(f"quality.decontamination.references[{i}].path", r.path) for i, r in enumerate(decontam.references)]
        if decontam.canaries:
            local_paths.append(("quality.decontamination.canaries", decontam.canaries))
    for field, path in local_paths:
        if "://" not in path and not spec.resolve(Path(path)).exists():
            problems.append(SpecProblem(file, field, f"expected an existing file or directory, {spec.resolve(Path(path))} not found"))
    tdir = spec.template_dir
    if not tdir.is_dir():
        problems.append(SpecProblem(file, "prompts.template_dir", f"expected a directory of templates, {tdir} not found"))
    else:
        for lang in spec.prompts.languages:
            for i, fmt in enumerate(spec.prompts.formats):
                if not (tdir / lang / f"{fmt}.j2").is_file():
                    problems.append(
                        SpecProblem(file, f"prompts.formats[{i}]", f"expected a template {tdir / lang / (fmt + '.j2')}")
                    )
    model = spec.generation.model
    if spec.generation.engine == "llamacpp" and model != BUNDLED_MODEL and not spec.resolve(Path(model)).is_file():
        problems.append(
            SpecProblem(file, "generation.model", f"expected '{BUNDLED_MODEL}' or an existing .gguf file, got {model!r}")
        )
    return problems


def load_spec(path: str | os.PathLike[str]) -> CorpusSpec:
    """Read and validate a spec file; raises SpecError naming the file and each bad field."""
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecProblem(file, "(file)", "expected an existing spec file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(file, "(file)", f"expected a readable UTF-8 file ({exc})")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(file, where or "(yaml)", f"expected valid YAML: {problem}")]) from None
    return parse_spec(data, file=file, source_path=p.resolve())


def discover(directory: Path) -> tuple[list[CorpusSpec], dict[str, SpecError]]:
    """Load every ``*.yaml`` spec in a directory: the valid ones, and the errors of the broken ones."""
    good: list[CorpusSpec] = []
    broken: dict[str, SpecError] = {}
    names: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            broken[str(path)] = exc
            continue
        if spec.name in names:
            broken[str(path)] = SpecError(
                [SpecProblem(str(path), "name", f"expected a unique corpus name, {spec.name!r} is used by {names[spec.name]}")]
            )
            continue
        names[spec.name] = str(path)
        good.append(spec)
    return good, broken
