"""The spec's vocabulary: formats, audiences, languages, filter reasons and what the gate measures.
Light (no pydantic): imported by the spec sections and by the libraries that share these names."""

from __future__ import annotations

from typing import Literal

FORMATS = ("textbook", "blog_post", "wikihow", "story", "dialogue", "technical")
AUDIENCES = ("young_children", "high_school_students", "college_students", "professionals", "general_public")
LANGUAGES = ("en", "fr", "de", "es", "it")
BUNDLED_MODEL = "smollm2-135m-instruct"

Format = Literal["textbook", "blog_post", "wikihow", "story", "dialogue", "technical"]
Audience = Literal["young_children", "high_school_students", "college_students", "professionals", "general_public"]
Language = Literal["en", "fr", "de", "es", "it"]

STORAGE_ENV = "SYNTHCORPUS_STORAGE_URI"

# Airflow pools that bound generation (created by the deployment: `make up`, the Helm values). CPU: llama.cpp
# in the worker's own process (generate, and topic labelling with the engine); GPU: one pod per shard.
CPU_GENERATE_POOL = "synthcorpus_cpu_generate"
GPU_GENERATE_POOL = "synthcorpus_gpu_generate"
# Airflow's default [core] max_map_length: the most map indexes one mapped task may have.
DEFAULT_MAX_MAP_LENGTH = 1024
# Threads per llama.cpp process, set by the deployment on each worker: its cores // the CPU pool's slots.
CPU_THREADS_ENV = "SYNTHCORPUS_CPU_THREADS"

# Filter reasons (``quality.filters``): one count per reason. Reason names follow datatrove's where it has
# them (its Gopher repetition filter: dup_para_frac ... duplicated_<n>_n_grams); n-gram sizes outside the
# defaults add top_<n>_gram / duplicated_<n>_n_grams (see ``quality.filters.reason_names``).
HEURISTIC_REASONS = (
    "too_few_chars", "too_many_chars", "symbol_word_ratio", "bullet_lines_ratio", "end_ellipsis_lines_ratio",
    "mean_word_length", "alpha_words_ratio", "dup_para_frac", "dup_para_char_frac", "dup_line_frac",
    "dup_line_char_frac", "top_2_gram", "top_3_gram", "top_4_gram",
    *(f"duplicated_{n}_n_grams" for n in range(5, 11)),
)
REASONS = ("empty", "truncated", "too_short", "too_long", "refusal", *HEURISTIC_REASONS, "wrong_language",
           "generation_failed")

# What the gate measures per run (see quality.release.run_metrics): the balance of documents across these
# dimensions and these word-count quantiles.
BALANCE_DIMENSIONS = ("format", "audience", "topic", "language")
WORD_QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}

# Columns the gate's batches carry (see stages.validate_shard), for checking user expectations at load.
# The judge's rubric (spec section ``judge``): each dimension scored 0..SCORE_MAX.
JUDGE_DIMENSIONS = ("educational_value", "coherence", "faithfulness", "audience_fit")
SCORE_MAX = 5
GATE_COLUMNS = {
    "documents": ("text", "n_words", "n_chars", "text_hash", "prompt_id", "seed_kind", "topic", "format", "audience",
                  "language", "template", "prompt_tokens", "completion_tokens", "attempts",
                  *(f"score_{d}" for d in JUDGE_DIMENSIONS), "score_overall", "judge_status", "refined"),
    "run_metrics": ("generated", "documents", "filtered_share", "exact_duplicates", "near_duplicates", "duplicate_rate",
                    "duplicate_text_hashes", "contaminated", "canaries_missed", "language_match_rate", "max_opening_share",
                    *(f"n_words_{q}" for q in WORD_QUANTILES),
                    *(f"{d}_{m}_share" for d in BALANCE_DIMENSIONS for m in ("max", "min")),
                    "judged", "judge_unscored", "judge_unscored_share",
                    *(f"score_{d}_{m}" for d in JUDGE_DIMENSIONS for m in ("mean", "p25", "p50", "below_share"))),
}


def gate_columns(batch: str) -> tuple[str, ...]:
    """GATE_COLUMNS plus one ``filtered_share_<reason>`` run metric per filter reason."""
    if batch != "run_metrics":
        return GATE_COLUMNS[batch]
    return GATE_COLUMNS[batch] + tuple(f"filtered_share_{r}" for r in REASONS)
# What each generating shard's budget entry totals (generation.py writes them, lineage.py sums them).
BUDGET_TOTALS = ("completion_tokens", "prompt_tokens", "gpu_seconds", "cost_usd", "rows")
