"""prompts: the prompt matrix -- kept topics' seeds x format x audience x language, rendered from
``include/prompts/<language>/<format>.j2`` (templates, plan and ids in :mod:`synthcorpus.prompts`).

Reads ``seeds`` and ``topics``; writes ``prompts/prompts.parquet`` and ``prompts/diversity.json``
(plan distribution, prompt near-duplicate rate).
"""

from __future__ import annotations

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "prompts"
READS = ("seeds", "topics")
MAPPED = False


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..prompts import build_rows
    from ..quality.diversity import prompt_report

    seeds = result(run, "seeds")["outputs"]
    topics = result(run, "topics")["outputs"]
    rows, templates, topics_used = build_rows(
        run.spec,
        storage.read_parquet(seeds["seeds"]).to_pylist(),
        storage.read_parquet(topics["topics"]).to_pylist(),
        storage.read_parquet(topics["assignments"]).to_pylist(),
    )
    uri = run.layout.output(NAME, "prompts")
    storage.write_parquet(uri, pa.Table.from_pylist(rows))
    report = prompt_report(rows)
    diversity = run.layout.output(NAME, "diversity")
    storage.write_json(diversity, report)
    stats = {
        "prompts": len(rows),
        "templates": {t.name: {"version": t.version, "sha256": t.sha256} for t in templates.values()},
        "topics_used": topics_used,
        "near_duplicate_rate": report["near_duplicate_rate"],
        "topic_in_prompt_share": report["topic_in_prompt_share"],
        **{f"by_{k}": report["distribution"][k] for k in ("format", "audience", "language", "seed_kind")},
    }
    return StageResult(NAME, {"prompts": uri, "diversity": diversity}, stats)
