"""decontaminate: drop documents that near-copy a benchmark item (a word 10-gram index over the
reference sets, candidates confirmed with difflib), after planting known canaries that must be caught.

Reads ``near_dedup`` shards and the spec's reference and canary files; writes
``decontaminate/shard-N.parquet`` and ``decontaminate/removed/shard-N.parquet`` (with the hits). The
index and matcher live in :mod:`synthcorpus.quality.decontam`.
"""

from __future__ import annotations

import logging

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "decontaminate"
READS = ("near_dedup",)
MAPPED = False
USES: tuple[str, ...] = ("quality.decontamination",)


def fingerprint_inputs(run: RunContext, shard: int | None = None) -> dict[str, str | None]:
    """Content hashes of the benchmark reference sets and the canary file."""
    from .contract import file_sha256

    cfg = run.spec.quality.decontamination
    if cfg is None:
        return {}
    files = {f"quality.decontamination.references[{i}]": file_sha256(run.spec.resolve_uri(r.path))
             for i, r in enumerate(cfg.references)}
    if cfg.canaries:
        files["quality.decontamination.canaries"] = file_sha256(run.spec.resolve_uri(cfg.canaries))
    return files


log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    """With ``canaries`` set, known-contaminated documents are added to the first shard before the check;
    the stage reports how many were caught (the gate requires all), and canaries never reach the corpus
    because they are removed with the contaminated documents (or, if missed, dropped here all the same)."""
    import pyarrow as pa

    from ..quality.decontam import decontaminate_shard, read_canaries, report

    documents = result(run, "near_dedup")["outputs"]["documents"]
    cfg = run.spec.quality.decontamination
    if cfg is None:  # the near_dedup shards pass through unchanged
        return StageResult(NAME, {"documents": list(documents)}, {"skipped": True})
    refs, index = reference_index(run)
    canaries = read_canaries(run.spec.resolve_uri(cfg.canaries)) if cfg.canaries else []
    outputs, stats_list, caught = [], [], set()
    for i, uri in enumerate(documents):
        table = storage.read_parquet(uri)
        rows = table.to_pylist()
        if i == 0:
            rows += [{"prompt_id": f"canary-{c['canary_id']}", **c} for c in canaries]
        kept, removed, stats = decontaminate_shard(rows, index, cfg.threshold)
        caught |= {r["canary_id"] for r in removed if r.get("canary_id")}
        kept = [r for r in kept if not r.get("canary_id")]
        out = run.layout.shard(NAME, i)
        storage.write_parquet(out, pa.Table.from_pylist(kept, schema=table.schema) if kept else table.slice(0, 0))
        if removed:
            storage.write_parquet(run.layout.removed(NAME, i), pa.Table.from_pylist(removed))
        outputs.append(out)
        stats_list.append(stats)
    by_benchmark = report(stats_list)
    planted = {c["canary_id"] for c in canaries}
    stats = {
        "input": sum(s["input"] for s in stats_list) - len(canaries),
        "removed": sum(s["removed"] for s in stats_list) - len(caught),
        "benchmarks": by_benchmark,
        "ngram": cfg.ngram,
        "threshold": cfg.threshold,
        "references": {r.name: len(r.texts) for r in refs},
        "canaries_planted": len(planted),
        "canaries_caught": len(caught),
        "canaries_missed": sorted(planted - caught),
    }
    stats["kept"] = stats["input"] - stats["removed"]
    log.info("decontamination: removed %d of %d documents; canaries caught %d/%d; %s",
             stats["removed"], stats["input"], len(caught), len(planted), by_benchmark)
    return StageResult(NAME, {"documents": outputs}, stats)


def reference_index(run: RunContext):
    """(the spec's benchmark reference sets, their n-gram index): what documents are checked against."""
    from ..quality.decontam import FIELD, NgramIndex, load_references

    cfg = run.spec.quality.decontamination
    refs = load_references([{**r.model_dump(), "path": run.spec.resolve_uri(r.path)} for r in cfg.references], FIELD)
    return refs, NgramIndex(refs, n=cfg.ngram)
