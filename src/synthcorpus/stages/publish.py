"""publish: write a gated run as a versioned, HF-datasets-compatible release, then switch ``latest``.

A refresh publishes version N+1 = version N + the run's new documents: the new data files are written
under ``versions/{version}/data/``, the manifest lists them and references (not copies) every data file
of the base version; each version stays readable on its own from its manifest (sha256 per file).

Reads ``quality_gate`` (the documents it validated; refuses a failed gate), the approval of that gate report
when the spec requires one (``stages.approval.check``: refuses without it) and ``history`` (the base
version: refuses if ``latest`` moved since the run started); writes ``versions/{version}/data/train-*.parquet``,
the version's index segment (``index/{version}/``: what the next refresh dedups against, and the prompts to
retry), ``README.md`` (dataset card), ``lineage.json``, then ``manifest.json`` (the version's commit
marker), then ``latest.json``. A reader that starts from ``latest.json`` or from a manifest never sees a
half-written version; a crash before the manifest leaves files that no pointer references. Re-running a
committed publish is a no-op, so an old run never moves ``latest`` back.

``latest.json`` is switched with a conditional write (``storage.write_if``: If-Match on S3, a locked
compare-and-swap on local files), so two runs of one corpus publishing at once cannot both win: the pointer
moves only from the version it was read as (the run's base, or nothing for a first version) to this one,
and only if it still is that version; otherwise it is read again and the decision made again. It never
moves back, and never names a version whose manifest is not stored.
"""

from __future__ import annotations

import datetime as dt
import logging

from .. import faults, storage
from .contract import RunContext, StageResult, result, results

NAME = "publish"
# The gate's report names the documents; the other stages' results go into lineage.json.
READS = ("quality_gate", "history", "top_up", "minhash_signatures", "seeds", "topics", "prompts", "generate", "filter_shard", "judge",
         "dedup", "near_dedup", "decontaminate")
MAPPED = False
USES: tuple[str, ...] = ("*",)  # lineage.json and the manifest record the whole spec

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..layout import LINEAGE, data_file
    from ..publish import PUBLISHED_COLUMNS, PublishError, conform, dataset_card, rebatch
    from .approval import check as approval_check
    from .history import base as history_base
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
    resumed = storage.exists(manifest_uri)
    if resumed:  # an earlier attempt stopped after the manifest, before its marker
        manifest = storage.read_json(manifest_uri)
        log.info("version %s is published already: not rewriting it", run.version)
        history = result(run, "history", required=False)
        base = (storage.read_json(history["outputs"]["base"]) if history
                else {"version": manifest.get("base_version"), "full_rebuild": False})
    else:
        approval = approval_check(run)  # publish.approval.required: only an approved gate report is published
        base = history_base(run)
        _check_latest_is_base(layout, base)
        # Exactly the documents the gate validated, streamed batch by batch into files of rows_per_file.
        rows = {u: storage.parquet_rows(u) for u in gate["documents"]}
        sources = [u for u, r in rows.items() if r]
        n = sum(rows.values())
        if n == 0:
            raise PublishError(f"{gate_marker['outputs']['report']}: expected at least one gated document to publish, found none")
        unified = pa.unify_schemas([storage.parquet_schema(u) for u in sources], promote_options="default")
        schema = pa.schema([unified.field(c) for c in PUBLISHED_COLUMNS if c in unified.names])
        if base["version"]:
            _check_schema(layout, base, schema)
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
            files.append({"path": rel, "rows": writer.rows, "bytes": size, "sha256": digest, "version": run.version})
        # Earlier versions' files, referenced where they are (each entry names the version that holds it).
        inherited = [{**f, "version": f.get("version") or base["version"]} for f in base["files"]]
        faults.point("publish:after_data", run.run_id)  # data files stored, nothing references them yet
        segment = write_index_segment(run, gate["documents"])
        retry = write_retry(run, base, gate["documents"])
        lineage = write_run_lineage(run, gate)
        manifest = {
            "corpus": run.spec.name,
            "version": run.version,
            "run_id": run.run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows": base["rows"] + n,
            "new_rows": n,
            "base_version": base["version"],
            "files": inherited + files,
            "schema": {f.name: str(f.type) for f in schema},
            "spec_sha256": run.spec.spec_hash(),
            "gate": {"passed": gate["passed"], "override": gate.get("override")},
            "approval": approval,
            "index": {"segments": [*base["segments"], run.version], "documents": segment["documents"]},
            "refresh": {"prompt_plan": plan_cursor(run), "yield": measured_yield(run), "retry": retry["uri"],
                        "retry_prompts": retry["retry"], "retired_prompts": retry["retired"]},
        }
        base_lineage = layout.version_file(base["version"], LINEAGE) if base["version"] else None
        base_lineage = storage.read_json(base_lineage) if base_lineage and storage.exists(base_lineage) else None
        storage.write_text(layout.dataset_card, dataset_card(run.spec, manifest, lineage, base_lineage))
        storage.write_json(layout.version_lineage, lineage)
        storage.write_json(manifest_uri, manifest)  # the version exists from here on
    gate_status = "passed" if manifest["gate"]["passed"] else "overridden"
    stats = {"rows": manifest["rows"], "new_rows": manifest.get("new_rows", manifest["rows"]),
             "base_version": manifest.get("base_version"), "files": len(manifest["files"]), "version": run.version,
             "gate": gate_status}
    faults.point("publish:after_manifest", run.run_id)  # the version exists; latest.json not switched yet
    newer = _switch_latest(layout, manifest, base, resumed)
    if newer is None:
        log.info("published %s rows as %s; latest -> %s", manifest["rows"], layout.version_uri(), run.version)
    else:  # `latest` moved on to a version published after this one: it must not move back
        stats["latest_kept"] = newer
        log.info("latest -> %s, published after %s: left as it is", newer, run.version)
    return StageResult(NAME, {"version": layout.version_uri(), "manifest": manifest_uri, "latest": layout.latest}, stats)


SWITCH_ATTEMPTS = 8  # conditional writes of latest.json lost to another writer before publish gives up


def _switch_latest(layout, manifest: dict, base: dict, resumed: bool) -> str | None:
    """Point ``latest.json`` at this version with a compare-and-swap: read it (with its token), decide
    (:func:`_decide`), write only if it is unchanged since the read; lost to a concurrent writer: read and
    decide again. Returns the newer version left in place (re-run of an old publish), else None."""
    from ..publish import PublishError

    version = manifest["version"]
    pointer = {"version": version, "manifest": layout.manifest, "uri": layout.version_uri(), "rows": manifest["rows"]}
    data = storage.json_bytes(pointer)
    for _ in range(SWITCH_ATTEMPTS):
        raw, token = storage.read_with_token(layout.latest)
        current = None if raw is None else _parse_pointer(layout.latest, raw)
        action, newer = _decide(layout, manifest, base, current, resumed)
        if action == "done":  # already points here (an earlier attempt's write landed)
            return None
        if action == "keep":
            return newer
        if not storage.exists(layout.manifest):  # never point at a version that is not stored
            raise PublishError(f"{layout.manifest}: expected the manifest of version {version} before switching "
                               f"{layout.latest} to it, found none; latest is left as it is")
        if storage.write_if(layout.latest, data, token):
            return None
        log.info("%s changed while publishing %s: reading it again", layout.latest, version)
    raise PublishError(f"{layout.latest}: expected to switch it to {version}, but it changed under each of "
                       f"{SWITCH_ATTEMPTS} conditional writes (other runs publishing); latest is left as it is")


def _parse_pointer(latest_uri: str, raw: bytes) -> dict:
    import json

    from ..publish import PublishError

    try:
        pointer = json.loads(raw)
    except ValueError as exc:
        raise PublishError(f"{latest_uri}: expected JSON with the latest version ({exc})") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise PublishError(f"{latest_uri}: field 'version': expected the name of the latest version")
    return pointer


def _decide(layout, manifest: dict, base: dict, current: dict | None, resumed: bool) -> tuple[str, str | None]:
    """What to do with ``latest.json`` holding ``current`` (a pointer, None if there is none) for the version
    of ``manifest``: ("switch", None), ("done", None) when it points here already, ("keep", newer) when a
    version published after this one holds it and this is a re-run of a committed publish; raises
    :class:`PublishError` when switching would publish on top of a version the run did not build on."""
    from ..publish import PublishError

    version = manifest["version"]
    found = current["version"] if current else None
    if found == version:
        return "done", None
    if found is None:  # a first version; or latest.json was removed after the manifest was written
        if base["full_rebuild"] or base["version"] is None or resumed:
            return "switch", None
        raise _moved(layout, base, None)
    if not base["full_rebuild"] and found == base["version"]:
        return "switch", None
    newer = _published_after(layout, current, manifest)
    if newer and resumed:
        return "keep", found
    if base["full_rebuild"]:
        if not newer:  # a full rebuild replaces an older version
            return "switch", None
        raise PublishError(
            f"{layout.latest}: expected the latest version to be published before {version} (a full rebuild replaces "
            f"older versions), found {found}, published after it: latest is left as it is; start a new run to build "
            f"on {found}")
    raise _moved(layout, base, found)


def _published_after(layout, pointer: dict, manifest: dict) -> bool:
    """Whether the version ``pointer`` names was published after (or in the same second as: a tie keeps it)
    the version of ``manifest``."""
    from ..publish import PublishError

    uri = pointer.get("manifest") or layout.manifest_of(pointer["version"])
    try:
        current = storage.read_json(uri)
    except FileNotFoundError:
        raise PublishError(f"{layout.latest}: points at version {pointer['version']}, whose manifest {uri} is "
                           "missing") from None
    return current["created_at"] >= manifest["created_at"]


def _check_latest_is_base(layout, base: dict) -> None:
    """The run deduplicated against its base version: publishing on top of another would skip that check."""
    current = storage.read_json(layout.latest)["version"] if storage.exists(layout.latest) else None
    if base["full_rebuild"] or current == base["version"]:
        return
    raise _moved(layout, base, current)


def _moved(layout, base: dict, current: str | None) -> Exception:
    from ..publish import PublishError

    return PublishError(
        f"{layout.latest}: expected the latest version to be {base['version'] or 'none'} (this run's base, pinned in "
        f"{layout.output('history', 'base')}), found {current}: the run's documents were not deduplicated against "
        f"{current}; start a new run to build on it")


def _check_schema(layout, base: dict, schema) -> None:
    """Every file of a version has one schema: the new files must match the base version's."""
    from ..publish import ManifestError

    old = storage.read_json(base["manifest"]).get("schema") or {}
    new = {f.name: str(f.type) for f in schema}
    if old and old != new:
        diff = sorted(set(old.items()) ^ set(new.items()))
        raise ManifestError(f"{base['manifest']}: field 'schema': expected the new documents' columns {new}, the base "
                            f"version has {old} (differs in {diff[:4]}); publish with full_rebuild")


def write_index_segment(run: RunContext, document_uris: list[str]) -> dict:
    """The version's segment of the published index: text hash and MinHash signature of every new document,
    joined shard by shard from the published documents and the signature files that cover them."""
    import pyarrow.compute as pc

    from ..quality.minhash import MinHashParams, band_columns
    from ..publish import PublishError
    from ..quality.published_index import write_segment
    from .top_up import round_signatures

    params = MinHashParams.from_spec(run.spec.quality.near_dedup)
    signature_uris = [m["outputs"]["signatures"] for m in results(run, "minhash_signatures")]
    signature_uris += round_signatures(result(run, "top_up"))
    sig_columns = ["prompt_id", "n_shingles", *band_columns(params), "sig"]

    def batches():
        for docs_uri, sig_uri in zip(document_uris, signature_uris):
            docs = _columns(docs_uri, ["prompt_id", "text_hash"])
            if docs is None:
                continue
            sig = storage.read_parquet(sig_uri).select(sig_columns)
            at = pc.index_in(docs.column("prompt_id"), value_set=sig.column("prompt_id"))
            if at.null_count:
                raise PublishError(f"{sig_uri}: expected a MinHash signature for each of the {docs.num_rows} documents "
                                   f"of {docs_uri}, {at.null_count} have none")
            sig = sig.take(at).append_column("text_hash", docs.column("text_hash"))
            yield sig.select(["prompt_id", "text_hash", *sig_columns[1:]]).combine_chunks()

    return write_segment(run.layout.index_root, run.version, batches(), params)


def plan_cursor(run: RunContext) -> dict:
    """Where the next refresh continues the prompt plan: after every plan item this run took (its prompts
    and the reserve prompts its top-up rounds used)."""
    from .top_up import reserve_used

    prompts = result(run, "prompts")
    plan = dict(prompts["stats"]["prompt_plan"])
    used = reserve_used(result(run, "top_up"))
    lo, hi = plan.get("in_reserve", [0, 0])  # the plan's own prompts in the reserve (the rest are retries)
    if min(used, hi) > lo:
        positions = storage.read_parquet(prompts["outputs"]["reserve"]).slice(lo, min(used, hi) - lo).column("plan_position")
        plan["cursor"] = max([plan["cursor"], *[p + 1 for p in positions.to_pylist()]])
    return {"fingerprint": plan["fingerprint"], "cursor": plan["cursor"]}


def measured_yield(run: RunContext) -> float | None:
    """Clean documents per generated prompt in this run (before the surplus was set aside): what the next
    refresh provisions prompts by."""
    top_up = result(run, "top_up")["stats"]
    if not top_up.get("generated"):
        return None
    return round((top_up["documents"] + top_up["surplus"]) / top_up["generated"], 4)


def write_retry(run: RunContext, base: dict, document_uris: list[str]) -> dict:
    """The prompts this version tried and did not publish, with their failure counts, plus the base version's
    retries this run did not get to and every retired prompt. Prompts the budget left ungenerated and surplus
    documents set aside by top_up do not count as failures."""
    import pyarrow as pa

    from .prompts import RETRY_COLUMNS
    from .top_up import reserve_used

    retire_after = run.spec.refresh.retire_after_failures
    prompts = result(run, "prompts")["outputs"]
    used = reserve_used(result(run, "top_up"))
    import pyarrow.compute as pc

    published = {p for u in document_uris if (t := _columns(u, ["prompt_id"])) is not None
                 for p in t.column(0).to_pylist()}
    known = pa.array(sorted(published), pa.string())

    def unpublished(table) -> list[dict]:
        """The rows whose prompt was not published, filtered in Arrow: only they become Python rows (a 100 k
        run used to hold every tried prompt, ~5 KB each, as Python objects here: ~550 MB)."""
        return table.filter(pc.invert(pc.is_in(table.column("prompt_id"), value_set=known))).to_pylist()

    tried = unpublished(storage.read_parquet(prompts["prompts"]))
    tried += unpublished(storage.read_parquet(prompts["reserve"]).slice(0, used)) if used else []
    not_failed = _not_generated(run) | _surplus(run)
    old = {r["prompt_id"]: r for r in storage.read_parquet(base["retry"]).to_pylist()} if base.get("retry") else {}
    out: dict[str, dict] = {}
    for row in tried:
        pid = row["prompt_id"]
        failures = old.get(pid, {}).get("failures", 0) + (0 if pid in not_failed else 1)
        out[pid] = {**{k: v for k, v in row.items() if k not in RETRY_COLUMNS}, "failures": failures}
    for pid, row in old.items():  # retired ones stay retired; retries not reached stay pending
        out.setdefault(pid, row)
    uri = run.layout.retry(run.version)
    rows = sorted(out.values(), key=lambda r: (r["plan_position"], r["prompt_id"]))
    storage.write_parquet(uri, pa.Table.from_pylist(rows) if rows else pa.table({"prompt_id": pa.array([], pa.string()),
                                                                                 "failures": pa.array([], pa.int64()),
                                                                                 "plan_position": pa.array([], pa.int64())}))
    retired = sum(r["failures"] >= retire_after for r in rows)
    return {"uri": uri, "retry": len(rows) - retired, "retired": retired}


def _not_generated(run: RunContext) -> set[str]:
    """Prompt ids the run's budget left ungenerated (status ``budget``), top-up rounds included: read only
    from the shards whose stats say they left some."""
    import pyarrow.compute as pc

    uris = [m["outputs"]["shard"] for m in results(run, "generate") if m["stats"].get("not_generated")]
    uris += [r["generate_output"] for r in result(run, "top_up")["stats"].get("round_stats", [])
             if r["generate"].get("not_generated")]
    out: set[str] = set()
    for uri in uris:
        t = _columns(uri, ["prompt_id", "status"])
        out.update(t.filter(pc.equal(t.column("status"), "budget")).column("prompt_id").to_pylist())
    return out


def _columns(uri: str, columns: list[str]):
    """Only these columns of a Parquet file (streamed), or None when it has no rows."""
    import pyarrow as pa

    batches = list(storage.iter_batches(uri, columns, 65536))
    return pa.Table.from_batches(batches) if batches and sum(b.num_rows for b in batches) else None


def _surplus(run: RunContext) -> set[str]:
    uri = result(run, "top_up")["outputs"].get("surplus")
    return set(storage.read_parquet(uri).column("prompt_id").to_pylist()) if uri else set()
