"""publish: write a gated run as a versioned, HF-datasets-compatible release, then switch ``latest``.

Reads ``quality_gate`` (the documents it validated; refuses a failed gate); writes
``versions/{version}/data/train-*.parquet``, ``README.md`` (dataset card), ``lineage.json``, then
``manifest.json`` (the version's commit marker), then ``latest.json``. A reader that starts from
``latest.json`` or from a manifest never sees a half-written version; a crash before the manifest leaves
files that no pointer references. Re-running a committed publish is a no-op, so an old run never moves
``latest`` back.
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "publish"
# The gate's report names the documents; the other stages' results go into lineage.json.
READS = ("quality_gate", "seeds", "topics", "prompts", "generate", "filter_shard", "dedup", "near_dedup", "decontaminate")
MAPPED = False

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..layout import data_file
    from ..publish import PUBLISHED_COLUMNS, PublishError, conform, dataset_card, rebatch
    from .quality_gate import write_run_lineage

    layout = run.layout
    gate_marker = result(run, "quality_gate", required=False)
    if not gate_marker:
        report_uri = layout.output("quality_gate", "report")
        if storage.exists(report_uri):
            raise PublishError(f"{report_uri}: the quality gate failed; nothing is published")
        raise PublishError(f"{report_uri}: expected a quality gate report; run the gate before publishing")
    gate = storage.read_json(gate_marker["outputs"]["report"])
    manifest_uri = layout.manifest
    newer = None
    if storage.exists(manifest_uri):  # an earlier attempt stopped after the manifest, before its marker
        manifest = storage.read_json(manifest_uri)
        log.info("version %s is published already: not rewriting it", run.version)
        newer = _newer_latest(layout.latest, manifest)
    else:
        # Exactly the documents the gate validated, streamed batch by batch into files of rows_per_file.
        rows = {u: storage.parquet_rows(u) for u in gate["documents"]}
        sources = [u for u, r in rows.items() if r]
        n = sum(rows.values())
        if n == 0:
            raise PublishError(f"{gate_marker['outputs']['report']}: expected at least one gated document to publish, found none")
        unified = pa.unify_schemas([storage.parquet_schema(u) for u in sources], promote_options="default")
        schema = pa.schema([unified.field(c) for c in PUBLISHED_COLUMNS if c in unified.names])
        per_file = run.spec.publish.rows_per_file
        n_files = -(-n // per_file)
        files = []
        batches = rebatch((conform(pa, b, schema) for u in sources for b in storage.iter_batches(u, schema.names, 4096)),
                          per_file)
        for i in range(n_files):
            rel = data_file(i, n_files)
            uri = layout.version_uri(rel)
            with storage.ParquetStreamWriter(uri, schema) as writer:
                while writer.rows < per_file:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    writer.write(batch)
            size, digest = storage.sha256(uri)  # hash what was stored, not what we meant to store
            files.append({"path": rel, "rows": writer.rows, "bytes": size, "sha256": digest})
        lineage = write_run_lineage(run, gate)
        manifest = {
            "corpus": run.spec.name,
            "version": run.version,
            "run_id": run.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows": n,
            "files": files,
            "schema": {f.name: str(f.type) for f in schema},
            "spec_sha256": run.spec.spec_hash(),
            "gate": {"passed": gate["passed"], "override": gate.get("override")},
        }
        storage.write_text(layout.dataset_card, dataset_card(run.spec, manifest, lineage))
        storage.write_json(layout.version_lineage, lineage)
        storage.write_json(manifest_uri, manifest)  # the version exists from here on
    gate_status = "passed" if manifest["gate"]["passed"] else "overridden"
    stats = {"rows": manifest["rows"], "files": len(manifest["files"]), "version": run.version, "gate": gate_status}
    if newer is None:
        pointer = {"version": run.version, "manifest": manifest_uri, "uri": layout.version_uri(), "rows": manifest["rows"]}
        storage.write_json(layout.latest, pointer)
        log.info("published %s rows as %s; latest -> %s", manifest["rows"], layout.version_uri(), run.version)
    else:  # `latest` moved on to a version published after this one: it must not move back
        stats["latest_kept"] = newer
        log.info("latest -> %s, published after %s: left as it is", newer, run.version)
    return StageResult(NAME, {"version": layout.version_uri(), "manifest": manifest_uri, "latest": layout.latest}, stats)


def _newer_latest(latest_uri: str, manifest: dict) -> str | None:
    """The version ``latest`` points at if it was published after (or in the same second as) the version of
    ``manifest``, else None."""
    if not storage.exists(latest_uri):
        return None
    pointer = storage.read_json(latest_uri)
    if pointer["version"] == manifest["version"]:
        return None
    current = storage.read_json(pointer["manifest"])
    return pointer["version"] if current["created_at"] >= manifest["created_at"] else None  # a tie: keep it
