"""Topic stage. Walking skeleton: one topic per outline unit (web-sample clustering comes later)."""

from __future__ import annotations

from . import storage
from .run import RunContext, StageResult


def extract_topics(run: RunContext, seeds_uri: str) -> StageResult:
    import pyarrow as pa

    seeds = storage.read_parquet(seeds_uri).to_pylist()
    topics = [
        {
            "topic_id": s["seed_id"],
            "label": s["unit"],
            "subject": s["subject"],
            "course": s["course"],
            "extract": s["description"],
            "size": 1,
            "kept": True,
            "reason": "outline unit",
        }
        for s in seeds
    ]
    uri = run.run_uri("topics", "topics.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist(topics))
    kept = sum(t["kept"] for t in topics)
    return StageResult("topics", {"topics": uri}, {"topics": len(topics), "kept": kept}).save(run)
