"""The metrics each stage emits for alerting, from its committed marker: StatsD counters and gauges named
``synthcorpus.<corpus>.<stage>.<what>`` (Airflow prefixes its ``[metrics] statsd_prefix``). Pure: the DAG
task hands the list to ``airflow_adapter.emit_metrics``, which sends it through Airflow's own stats
client; ``include/statsd/mapping.yml`` turns the names into Prometheus metrics with a ``corpus`` label.

=========================================  =======  =====================================================
name                                        kind     value
=========================================  =======  =====================================================
generate.documents / .failed                counter  rows generated (budget rows excluded) / given up
generate.completion_tokens / .prompt_tokens counter  tokens, every attempt
generate.cost_usd / .gpu_seconds            gauge+   budget used by the shard (a delta: the run total adds up)
generate.tokens_per_s                       gauge    the shard's generation speed
filter_shard.documents, .removed.<reason>  counter  documents kept by the filters, removed per reason
judge.scored / .unscored / .refined         counter  documents the judge scored, could not score, rewrote
judge.judge_completion_tokens / .rewrite_…  counter  the judge's tokens (apart from generation's)
dedup / near_dedup / decontaminate          counter  ``.documents`` kept, ``.removed``
top_up.documents / .shortfall / .rounds     gauge    documents the run keeps, how many short, top-up rounds
gate.passed / gate.overridden / gate.failed counter  one per gate decision (failed: from the task's failure)
gate.<run metric>                           gauge    filtered_share, duplicate_rate, language_match_rate, documents
approval.approved / .rejected / .timed_out  counter  one per release decision (publish.approval)
approval.wait_s                             gauge    seconds from the request to the decision
publish.rows / publish.new_rows             gauge    the version's rows, and its new ones
=========================================  =======  =====================================================
"""

from __future__ import annotations

import re
from typing import Any

PREFIX = "synthcorpus"
GATE_GAUGES = ("documents", "filtered_share", "duplicate_rate", "language_match_rate", "contaminated")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")

# One metric: (kind, name, value); kind "incr" (a counter), "gauge", or "delta" (a gauge change).
Metric = tuple[str, str, float]


def metric_name(corpus: str, *parts: str) -> str:
    """``synthcorpus.<corpus>.<part>...`` with every part reduced to letters, digits and ``_`` (StatsD names
    are dot-separated; Airflow accepts ASCII letters, digits, ``_.-`` and 250 characters)."""
    return ".".join(_UNSAFE.sub("_", p).strip("_") or "_" for p in (PREFIX, corpus, *parts))[:250]


def stage_metrics(corpus: str, stage: str, marker: dict[str, Any]) -> list[Metric]:
    """The metrics of one committed stage (or shard) marker."""
    stats = marker.get("stats") or {}
    name = lambda *parts: metric_name(corpus, *parts)  # noqa: E731
    out: list[Metric] = []
    if stage == "generate":
        out += [("incr", name("generate", "documents"), stats.get("rows", 0) - stats.get("not_generated", 0)),
                ("incr", name("generate", "failed"), stats.get("failed", 0)),
                ("incr", name("generate", "completion_tokens"), stats.get("completion_tokens", 0)),
                ("incr", name("generate", "prompt_tokens"), stats.get("prompt_tokens", 0)),
                ("delta", name("generate", "cost_usd"), float(stats.get("cost_usd") or 0.0)),
                ("delta", name("generate", "gpu_seconds"), float(stats.get("gpu_seconds") or 0.0))]
        if stats.get("tokens_per_s") is not None:
            out.append(("gauge", name("generate", "tokens_per_s"), float(stats["tokens_per_s"])))
    elif stage == "filter_shard":
        out.append(("incr", name(stage, "documents"), stats.get("kept", 0)))
        out += [("incr", name(stage, "removed", reason), n) for reason, n in sorted((stats.get("reasons") or {}).items()) if n]
    elif stage == "judge" and stats.get("enabled"):
        out += [("incr", name("judge", k), stats.get(k, 0)) for k in ("scored", "unscored", "refined")]
        out += [("incr", name("judge", k), stats.get(k, 0)) for k in ("judge_completion_tokens", "rewrite_completion_tokens")]
    elif stage in ("dedup", "near_dedup", "decontaminate") and not stats.get("skipped"):
        out += [("incr", name(stage, "documents"), stats.get("kept", 0)), ("incr", name(stage, "removed"), stats.get("removed", 0))]
    elif stage == "top_up":
        out += [("gauge", name("top_up", k), stats.get(k) or 0) for k in ("documents", "shortfall", "rounds")]
    elif stage == "quality_gate":
        decision = "passed" if stats.get("passed") else "overridden"
        out.append(("incr", name("gate", decision), 1))
        out += [("gauge", name("gate", k), float(stats[k])) for k in GATE_GAUGES if isinstance(stats.get(k), (int, float))]
    elif stage == "publish":
        out += [("gauge", name("publish", k), stats.get(k) or 0) for k in ("rows", "new_rows")]
    return [(kind, n, v) for kind, n, v in out if kind != "incr" or v]


def gate_failed(corpus: str) -> list[Metric]:
    """The metric of a gate that failed (the task raises; there is no marker)."""
    return [("incr", metric_name(corpus, "gate", "failed"), 1)]


def approval_metrics(corpus: str, decision: dict[str, Any]) -> list[Metric]:
    """The metrics of one release decision (``stages.approval.record``): its outcome and how long it waited."""
    out: list[Metric] = [("incr", metric_name(corpus, "approval", decision["status"]), 1)]
    if decision.get("wait_s") is not None:
        out.append(("gauge", metric_name(corpus, "approval", "wait_s"), float(decision["wait_s"])))
    return out
