"""judge (mapped): an LLM scores every filtered document against the rubric and rewrites the weak ones
(``synthcorpus.judge``; spec section ``judge``).

Reads ``filter_shard/shard-N.parquet``; writes ``judge/shard-N.parquet``: the same rows (every prompt id
once) with the score columns, the judge's status and critique, every round as provenance
(``judge_rounds``) and, for a refined document, its text before (``text_before_refine``); ``n_words``,
``n_chars`` and ``text_hash`` describe the kept text. With ``judge.enabled: false`` it writes nothing and
its marker points at the filtered shard, so the stages after it read one place either way.

Stats: scored / unscored (with reasons), refined, rounds, judge and rewrite tokens (apart from
generation's), a 0-5 histogram per dimension and score sums per format and audience (what the run
metrics and the gate read). Its tokens go into the run budget (``budget/judge-shard-N.json``); once a
limit is reached, the remaining documents stay unscored with reason ``budget``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .. import storage
from ..spec.judge import DIMENSIONS, SCORE_MAX
from .contract import RunContext, StageResult, result

NAME = "judge"
READS = ("filter_shard",)
MAPPED = True
USES: tuple[str, ...] = ("judge", "generation.engine", "generation.model", "generation.n_ctx", "generation.openai",
                         "generation.vllm", "generation.temperature", "generation.top_p", "generation.max_tokens",
                         "generation.budget", "prompts.template_dir", "quality.min_words", "quality.max_words",
                         "quality.refusal_phrases", "quality.heuristics")
BUDGET = "budget"

log = logging.getLogger(__name__)


def fingerprint_inputs(run: RunContext, shard: int | None = None) -> dict[str, str | None]:
    """The judge and rewrite templates of the spec's languages (when the judge is on)."""
    from .contract import file_sha256

    if not run.spec.judge.enabled:
        return {}
    return {f"prompts.template_dir/{lang}/{name}.j2": file_sha256((run.spec.template_dir / lang / f"{name}.j2").as_uri())
            for lang in run.spec.prompts.languages for name in ("judge", "rewrite")}


def run(run: RunContext, shard: int | None) -> StageResult:
    filtered = result(run, "filter_shard", shard)["outputs"]["documents"]
    if not run.spec.judge.enabled:
        return StageResult(NAME, {"documents": filtered}, {"enabled": False, "input": None}, shard=shard)
    out = run.layout.shard(NAME, shard)
    table = storage.read_parquet(filtered)
    judged, stats = judge_table(run, table, budget_entry=run.layout.budget_entry(NAME, shard), label=f"judge shard {shard}")
    storage.write_parquet(out, judged)
    return StageResult(NAME, {"documents": out}, stats, shard=shard)


def judge_engine(run: RunContext) -> tuple[Any, bool]:
    """(engine, whether this call created it): the run's engine when the judge uses the generator's,
    else the judge's own (``judge.engine`` / ``model`` / ``base_url``)."""
    from ..engines import load_engine

    spec, cfg = run.spec, run.spec.judge
    own = cfg.engine is not None or cfg.model is not None or cfg.base_url is not None
    if not own and run.engine is not None:
        return run.engine, False
    gen = spec.canonical()["generation"]
    config = {**gen, "base_dir": str(spec.spec_dir), "run_id": run.run_id}
    if cfg.engine:
        config["engine"] = cfg.engine
    if cfg.model:
        config["model"] = cfg.model
    if cfg.base_url:
        config["openai"] = {**gen["openai"], "base_url": cfg.base_url}
    return load_engine(config), True


def renderers(spec: Any) -> tuple[Any, Any]:
    """(render_judge(row, text), render_rewrite(row, text, verdict)): the judge's and the rewriter's prompts,
    from ``<template_dir>/<language>/judge.j2`` and ``rewrite.j2`` (checked before generation by the preflight)."""
    from ..judge import words
    from ..prompts import environment

    cfg = spec.judge
    env = environment(spec.template_dir)
    templates = {(lang, name): env.get_template(f"{lang}/{name}.j2") for lang in spec.prompts.languages
                 for name in ("judge", "rewrite")}

    def variables(row: dict[str, Any], text: str) -> dict[str, Any]:
        return {"document": words(text, cfg.document_words), "request": words(row.get("prompt") or "", cfg.request_words),
                "topic": row.get("topic"), "format": row.get("format") or "", "audience": row.get("audience") or "",
                "language": row.get("language")}

    def render_judge(row: dict[str, Any], text: str) -> str:
        return templates[(row["language"], "judge")].render(**variables(row, text)).strip()

    def render_rewrite(row: dict[str, Any], text: str, verdict: Any) -> str:
        return templates[(row["language"], "rewrite")].render(**variables(row, text), critique=verdict.critique or "",
                                                              scores=verdict.scores or {}).strip()

    return render_judge, render_rewrite


def judge_table(run: RunContext, table: Any, *, budget_entry: str | None, label: str, engine: Any = None) -> tuple[Any, dict[str, Any]]:
    """Judge (and refine) every row of a filtered table: the table with the judge columns, and stats."""
    import time

    import pyarrow as pa

    from ..engines import SamplingParams
    from ..generation import budget_reached, read_budget
    from ..judge import JUDGE_COLUMNS, Judge, row_columns
    from ..quality.filters import refusal_phrases, reject_reason, text_hash, word_count

    spec, cfg = run.spec, run.spec.judge
    render_judge, render_rewrite = renderers(spec)
    phrases = refusal_phrases(spec.quality)

    def check(row: dict[str, Any], text: str) -> str | None:
        return reject_reason({"text": text, "language": row.get("language")}, spec.quality, phrases)

    created = False
    if engine is None:
        engine, created = judge_engine(run)
    model_info = engine.model_info()  # what actually judged (the model file's sha256, or the server's URL)
    gen = spec.generation
    judge = Judge(engine=engine,
                  judge_params=SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=1.0),
                  rewrite_params=SamplingParams(max_tokens=cfg.rewrite_max_tokens or gen.max_tokens,
                                                temperature=gen.temperature, top_p=gen.top_p, repeat_penalty=gen.repeat_penalty),
                  thresholds=dict(cfg.thresholds), max_rounds=cfg.max_rounds, retries=cfg.max_retries,
                  render_judge=render_judge, render_rewrite=render_rewrite, check=check)
    limits = gen.budget.model_dump()
    limited = gen.budget.limited
    spent = {"judge_prompt_tokens": 0, "judge_completion_tokens": 0, "rewrite_prompt_tokens": 0, "rewrite_completion_tokens": 0}
    started = time.perf_counter()
    rows = table.to_pylist()
    out_rows: list[dict[str, Any]] = []
    stopped: list[str] = []
    try:
        for i, row in enumerate(rows):
            if limited and not stopped:
                own = {"completion_tokens": spent["judge_completion_tokens"] + spent["rewrite_completion_tokens"],
                       "prompt_tokens": spent["judge_prompt_tokens"] + spent["rewrite_prompt_tokens"]}
                others = read_budget(run.layout.budget_dir, skip=budget_entry)
                stopped = budget_reached(limits, {k: others.get(k, 0) + own.get(k, 0) for k in others})
                if stopped:
                    log.warning("%s: run budget reached (%s): %d documents left unscored", label, ", ".join(stopped), len(rows) - i)
            if stopped:
                out_rows.append({**row, **row_columns(None, row["text"], BUDGET)})
                continue
            judged = judge(row, seed=int(row.get("seed") or 0) ^ 0x5EED)
            for k, (p, c) in (("judge", judged.judge_tokens), ("rewrite", judged.rewrite_tokens)):
                spent[f"{k}_prompt_tokens"] += p
                spent[f"{k}_completion_tokens"] += c
            new = {**row, "text": judged.text, **row_columns(judged, row["text"])}
            if judged.refined:
                new.update(n_words=word_count(judged.text), n_chars=len(judged.text), text_hash=text_hash(judged.text))
            out_rows.append(new)
            if budget_entry:
                _write_budget(budget_entry, spent, i + 1)
    finally:
        if created:
            engine.close()
    if budget_entry:
        _write_budget(budget_entry, spent, len(rows), done=True)
    schema = table.schema
    for name, typ in _column_types(pa):
        if name in schema.names:
            schema = schema.set(schema.get_field_index(name), pa.field(name, typ))
        else:
            schema = schema.append(pa.field(name, typ))
    judged_table = pa.Table.from_pylist(out_rows, schema=schema)
    assert [r["prompt_id"] for r in out_rows] == [r["prompt_id"] for r in rows] and set(JUDGE_COLUMNS) <= set(schema.names)
    stats = judge_stats(out_rows, spent, wall_s=time.perf_counter() - started, stopped=stopped,
                        thresholds=dict(cfg.thresholds))
    return judged_table, {**stats, "model_info": model_info}


def _column_types(pa: Any) -> list[tuple[str, Any]]:
    from ..judge import SCORE_COLUMNS

    return [*((c, pa.int8()) for c in SCORE_COLUMNS), ("score_overall", pa.float64()), ("judge_status", pa.string()),
            ("judge_error", pa.string()), ("judge_critique", pa.string()), ("judge_rounds", pa.string()),
            ("refined", pa.bool_()), ("text_before_refine", pa.string())]


def _write_budget(entry: str, spent: dict[str, int], rows: int, done: bool = False) -> None:
    storage.write_json(entry, {"completion_tokens": spent["judge_completion_tokens"] + spent["rewrite_completion_tokens"],
                               "prompt_tokens": spent["judge_prompt_tokens"] + spent["rewrite_prompt_tokens"],
                               "gpu_seconds": 0.0, "cost_usd": 0.0, "rows": rows, "done": done, "stage": NAME})


def judge_stats(rows: list[dict[str, Any]], spent: dict[str, int], *, wall_s: float, stopped: list[str],
                thresholds: dict[str, float]) -> dict[str, Any]:
    """What the run metrics merge: counts, reasons, tokens, histograms and per-group score sums."""
    import json

    scored = [r for r in rows if r["judge_status"] == "scored"]
    reasons = Counter(_reason_kind(r["judge_error"]) for r in rows if r["judge_status"] != "scored")
    hist = {d: [sum(1 for r in scored if r[f"score_{d}"] == v) for v in range(SCORE_MAX + 1)] for d in DIMENSIONS}
    below = {d: sum(1 for r in scored if r[f"score_{d}"] < t) for d, t in thresholds.items()}
    groups: dict[str, dict[str, dict[str, Any]]] = {"format": {}, "audience": {}}
    for r in scored:
        for g in groups:
            slot = groups[g].setdefault(r.get(g) or "", {"n": 0, **{d: 0 for d in DIMENSIONS}})
            slot["n"] += 1
            for d in DIMENSIONS:
                slot[d] += r[f"score_{d}"]
    rounds = sum(max(0, len(json.loads(r["judge_rounds"] or "[]")) - 1) for r in rows)
    return {"enabled": True, "input": len(rows), "scored": len(scored), "unscored": len(rows) - len(scored),
            "unscored_reasons": dict(sorted(reasons.items())), "refined": sum(1 for r in rows if r["refined"]),
            "rewrite_rounds": rounds, **spent, "wall_s": round(wall_s, 3), "stopped_by_budget": stopped,
            "histogram": hist, "below_threshold": below, "by_group": groups}


def _reason_kind(error: str | None) -> str:
    if not error:
        return "unknown"
    if error == BUDGET:
        return BUDGET
    return error.split(":", 1)[0].strip().replace(" ", "_")  # "malformed_reply", "engine"
