"""topics: seeds -> topics, Cosmopedia-style (outline units, one instructions topic, web clusters labelled
by the engine). The algorithms (embedding, k-means, c-TF-IDF, labelling) live in :mod:`synthcorpus.topics`.

Reads ``seeds``; writes ``topics/topics.parquet`` and ``topics/assignments.parquet`` (seed -> topic).
"""

from __future__ import annotations

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "topics"
READS = ("seeds",)
MAPPED = False
USES: tuple[str, ...] = ("topics", "prompts.template_dir", "generation.engine", "generation.model", "generation.n_ctx",
                         "generation.threads", "generation.seed", "generation.openai", "generation.vllm")


def fingerprint_inputs(run: RunContext, shard: int | None = None) -> dict[str, str | None]:
    """The cluster-labelling template's content hash, when the engine labels web seeds."""
    from ..topics.labelling import LABEL_TEMPLATE
    from .contract import file_sha256

    if run.spec.seeds.web_samples is None or run.spec.topics.labeler != "engine":
        return {}
    return {f"prompts.template_dir/{LABEL_TEMPLATE}": file_sha256((run.spec.template_dir / LABEL_TEMPLATE).as_uri())}


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..topics import extract, read_seeds, topics_schema

    spec = run.spec
    seeds = read_seeds(result(run, "seeds")["outputs"]["seeds"])
    engine_config = {**spec.canonical()["generation"], "base_dir": str(spec.spec_dir)}
    topics, assigned, stats = extract(seeds, spec.topics, spec.template_dir, run.engine, engine_config)
    topics_uri = run.layout.output(NAME, "topics")
    assign_uri = run.layout.output(NAME, "assignments")
    storage.write_parquet(topics_uri, pa.Table.from_pylist(topics, schema=topics_schema()))
    storage.write_parquet(assign_uri, pa.table({"seed_id": pa.array(seeds.seed_id, pa.string()),
                                                "topic_id": pa.array(assigned, pa.string())}))
    return StageResult(NAME, {"topics": topics_uri, "assignments": assign_uri}, stats)
