"""What the Corpora pages show, read from storage through the run layout and the stage markers.

Every function here takes a loaded spec and ids that :func:`checked_id` accepted, and returns plain
dicts (the pages render them; the JSON routes return them). Nothing reads the corpus itself: a page
reads markers, ``lineage.json``, manifests, the gate's report and profile, checkpoint-part footers and
a bounded sample of rows, so it answers as fast for a 100 k-document run as for a 30-document one.
``file://`` and ``s3://`` storage work alike (``synthcorpus.storage``).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import Any

from .. import storage
from ..layout import (LINEAGE, MARKER_SUFFIX, OUTPUTS, SHARD_PREFIX, STAGE_MARKER, RunLayout, part_number, sanitize_run_id,
                      shard_name)
from ..lineage import LINEAGE_STAGES, build_lineage
from ..publish import file_uri
from ..spec import CorpusSpec
from ..stages import TABLE
from ..stages.contract import RunContext, read_marker, results

# Run and version ids from a URL: letters, digits and . _ : + - (Airflow's run ids), never "..".
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}")
SAMPLE_ROWS = 5
SAMPLE_CHARS = 600
# The funnel: label -> lineage.json counts key (after each step).
FUNNEL = (
    ("seeds", "seeds"), ("topics", "topics_kept"), ("prompts", "prompts"), ("generated", "generated"),
    ("filtered", "after_filters"), ("deduplicated", "after_near_dedup"), ("decontaminated", "decontaminated"),
    ("published", "published"),
)
SAMPLE_COLUMNS = ("text", "prompt_id", "topic", "format", "audience", "language", "model", "template", "seed_id", "run_id")


class NotFound(LookupError):
    """An id, version or file that is not in the corpus (the pages answer 404)."""


class NotStarted(NotFound):
    """A well-formed run id with nothing in storage yet (a queued DAG run: its page says so)."""


def checked_id(value: str, what: str) -> str:
    """``value`` if it is a well-formed run or version id, else NotFound: ids from a URL never reach a
    storage path with a ``/`` or a ``..`` in them."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise NotFound(f"{what} {value!r}: expected letters, digits and . _ : + - only")
    return value


def corpus_layout(spec: CorpusSpec) -> RunLayout:
    """The corpus-level paths (latest, versions, runs); the run id is a placeholder."""
    return RunLayout(spec.storage_uri(), spec.name, "_")


def run_context(spec: CorpusSpec, run_id: str) -> RunContext:
    return RunContext.create(spec, sanitize_run_id(checked_id(run_id, "run")))


def _json(uri: str) -> Any:
    try:
        return storage.read_json(uri)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- corpus
def latest(spec: CorpusSpec) -> dict[str, Any] | None:
    return _json(corpus_layout(spec).latest)


def version_ids(spec: CorpusSpec) -> list[str]:
    return [v for v in storage.list_names(corpus_layout(spec).versions_root) if _SAFE_ID.fullmatch(v)]


def run_ids(spec: CorpusSpec) -> list[str]:
    return [r for r in storage.list_names(corpus_layout(spec).runs_root) if _SAFE_ID.fullmatch(r)]


def version(spec: CorpusSpec, version_id: str) -> dict[str, Any]:
    """One published version: its manifest, the metrics of the run that made it (its lineage) and the
    numbers the corpus page charts."""
    layout = corpus_layout(spec)
    vid = checked_id(version_id, "version")
    manifest = _json(layout.manifest_of(vid))
    if manifest is None:
        raise NotFound(f"version {vid!r} of corpus {spec.name!r}: no manifest")
    lineage = _json(layout.version_file(vid, LINEAGE)) or {}
    counts = lineage.get("counts") or {}
    metrics = (lineage.get("gate") or {}).get("metrics") or {}
    generated = counts.get("generated") or 0
    filtered = {k: round(v / generated, 4) if generated else 0.0 for k, v in sorted((counts.get("filtered_out") or {}).items()) if v}
    return {
        "version": vid,
        "created_at": manifest.get("created_at"),
        "run_id": manifest.get("run_id", vid),
        "rows": manifest.get("rows"),
        "new_rows": manifest.get("new_rows", manifest.get("rows")),
        "base_version": manifest.get("base_version"),
        "files": manifest.get("files", []),
        "gate": manifest.get("gate") or {},
        "filtered_share_by_reason": filtered,
        "duplicate_rate": metrics.get("duplicate_rate"),
        "contaminated": counts.get("contaminated"),
        "language_match_rate": metrics.get("language_match_rate"),
        "completion_tokens": counts.get("completion_tokens"),
        "cost_usd": (lineage.get("budget") or {}).get("used", {}).get("cost_usd", counts.get("cost_usd")),
        "budget": lineage.get("budget"),
        "metrics": metrics,
        "model": (lineage.get("model") or {}).get("model"),
    }


def versions(spec: CorpusSpec) -> list[dict[str, Any]]:
    """Every published version, oldest first."""
    out = []
    for vid in version_ids(spec):
        try:
            out.append(version(spec, vid))
        except NotFound:  # a version being written (its manifest comes last) is not one yet
            continue
    return sorted(out, key=lambda v: (v["created_at"] or "", v["version"]))


def corpus_summary(spec: CorpusSpec) -> dict[str, Any]:
    """One row of the Corpora list: latest version, rows, gate and budget of it."""
    pointer = latest(spec)
    row: dict[str, Any] = {"corpus": spec.name, "dag_id": spec.dag_id, "schedule": spec.schedule,
                           "documents": spec.documents, "latest": None}
    if pointer:
        try:
            v = version(spec, pointer["version"])
        except NotFound:
            v = None
        if v:
            row["latest"] = {k: v[k] for k in ("version", "rows", "new_rows", "created_at", "gate", "budget", "cost_usd")}
    return row


def runs(spec: CorpusSpec, limit: int = 50) -> list[dict[str, Any]]:
    """The corpus's runs in storage (newest first): how far each got, from its markers alone."""
    out = []
    for rid in run_ids(spec):
        run = RunContext.create(spec, rid)
        gate = read_marker(run.layout.marker("quality_gate")) or {}
        published = read_marker(run.layout.marker("publish")) or {}
        spec_snapshot = storage.modified(run.layout.spec_snapshot)
        out.append({"run_id": rid, "started": spec_snapshot, "gate": (gate.get("stats") or {}).get("passed"),
                    "override": (gate.get("stats") or {}).get("override"),
                    "published": (published.get("stats") or {}).get("new_rows"),
                    "quarantined": storage.exists(run.layout.quarantine)})
    out.sort(key=lambda r: r["started"] or 0, reverse=True)
    return out[:limit]


# ---------------------------------------------------------------------------------------------- one run
def stage_states(run: RunContext) -> list[dict[str, Any]]:
    """Each stage of the table: committed or not (unmapped), shards committed of planned (mapped); one
    listing per stage."""
    plan = read_marker(run.layout.marker("plan_shards"))
    top_up = read_marker(run.layout.marker("top_up"))
    sources = {"plan_shards": plan, "top_up": top_up}
    out = []
    for stage in TABLE:
        names = storage.list_names(run.layout.stage_dir(stage.name))
        if stage.mapped:
            source = sources.get(stage.shards_from)
            planned = len(source["shards"]) if source else None
            done = sum(1 for n in names if n.startswith(SHARD_PREFIX) and n.endswith(MARKER_SUFFIX))
            state = "done" if planned is not None and done >= planned else ("running" if done or names else "waiting")
            out.append({"stage": stage.name, "mapped": True, "done": done, "planned": planned, "state": state})
        else:
            state = "done" if STAGE_MARKER in names else ("running" if names else "waiting")
            out.append({"stage": stage.name, "mapped": False, "state": state})
    return out


def run_lineage(run: RunContext) -> tuple[dict[str, Any], bool]:
    """The run's ``lineage.json`` once the gate wrote it (and True); before that, the same document built
    from the markers committed so far (counts of stages not committed yet are missing) and False."""
    found = _json(run.layout.lineage)
    if found is not None:
        return found, True
    return build_lineage(run.spec, run.run_id, {s: results(run, s, required=False) for s in LINEAGE_STAGES}, None, None), False


def funnel(run: RunContext, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """seeds -> topics -> prompts -> generated -> filtered -> deduplicated -> decontaminated -> published,
    from the lineage ``counts`` and the decontaminate and publish markers."""
    counts = dict(counts)
    # lineage's after_near_dedup and contaminated both include the top-up rounds' documents
    decontaminated = read_marker(run.layout.marker("decontaminate")) and counts.get("after_near_dedup")
    counts["decontaminated"] = decontaminated - (counts.get("contaminated") or 0) if decontaminated is not None else None
    published = read_marker(run.layout.marker("publish"))
    counts["published"] = (published.get("stats") or {}).get("new_rows") if published else None
    return [{"step": label, "count": counts.get(key)} for label, key in FUNNEL]


def progress(spec: CorpusSpec, run_id: str) -> dict[str, Any]:
    """Live generation progress of a run (see :func:`run_progress`), by its id from a URL."""
    return run_progress(run_context(spec, run_id))


def run_progress(run: RunContext) -> dict[str, Any]:
    """Live generation progress per shard: rows done of planned, completion tokens per second of
    generation and the ETA, from committed markers (done shards) and checkpoint-part footers and token
    columns (shards in progress)."""
    plan = read_marker(run.layout.marker("plan_shards"))
    if plan is None:
        return {"run_id": run.run_id, "state": "planning", "shards": [], "done": 0, "planned": None,
                "tokens_per_s": None, "eta_s": None, "at": time.time()}
    committed = set(storage.list_names(run.layout.stage_dir("generate")))
    shards, rate = [], 0.0
    for entry in plan["outputs"]["shards"]:
        index, planned = int(entry["index"]), int(entry.get("rows") or 0)
        row: dict[str, Any] = {"shard": shard_name(index), "planned": planned}
        if posixpath.basename(run.layout.marker("generate", index)) in committed:
            stats = (read_marker(run.layout.marker("generate", index)) or {}).get("stats") or {}
            row.update(state="done", done=planned, tokens=stats.get("completion_tokens"), seconds=stats.get("wall_s"),
                       tokens_per_s=stats.get("tokens_per_s"), eta_s=0.0)
        else:
            parts = [u for u in storage.list_files(run.layout.parts("generate", index)) if part_number(u) is not None]
            done = tokens = 0
            seconds = 0.0
            for uri in parts:
                for batch in storage.iter_batches(uri, ["total_completion_tokens", "latency_s"], 65536):
                    cols = batch.schema.names
                    done += batch.num_rows
                    if "total_completion_tokens" in cols:
                        tokens += sum(v or 0 for v in batch.column("total_completion_tokens").to_pylist())
                    if "latency_s" in cols:
                        seconds += sum(v or 0.0 for v in batch.column("latency_s").to_pylist())
            per_row = seconds / done if done and seconds else None
            eta = (planned - done) * per_row if per_row else None
            if per_row:
                rate += 1 / per_row
            row.update(state="running" if parts else "waiting", done=done, tokens=tokens, seconds=round(seconds, 3),
                       tokens_per_s=round(tokens / seconds, 1) if seconds else None,
                       eta_s=round(eta, 1) if eta is not None else None)
        shards.append(row)
    done = sum(s["done"] for s in shards)
    planned = sum(s["planned"] for s in shards)
    running = [s for s in shards if s["state"] == "running"]
    # generation speed: completion tokens per second of generation, over the shards in progress (all
    # shards once every one is done)
    timed = [s for s in (running or shards) if s.get("tokens") and s.get("seconds")]
    speed = sum(s["tokens"] for s in timed) / sum(s["seconds"] for s in timed) if timed else None
    state = "done" if all(s["state"] == "done" for s in shards) else ("running" if running or done else "waiting")
    return {"run_id": run.run_id, "state": state, "shards": shards, "done": done, "planned": planned,
            "tokens_per_s": round(speed, 1) if speed else None,
            "eta_s": round((planned - done) / rate, 1) if rate and state != "done" else (0.0 if state == "done" else None),
            "at": time.time()}


def topics(run: RunContext, limit: int = 500) -> list[dict[str, Any]]:
    uri = run.layout.output("topics", "topics")
    if not storage.exists(uri):
        return []
    columns = ["topic_id", "kind", "label", "score", "size", "kept", "reason"]
    names = storage.parquet_schema(uri).names
    for batch in storage.iter_batches(uri, [c for c in columns if c in names], limit):
        return batch.to_pylist()[:limit]
    return []


def distributions(run: RunContext) -> dict[str, Any] | None:
    """Documents per format, audience, language and topic, the word-count histogram and the most common
    openings of the run's documents (the gate's merged profile and diversity report)."""
    profile = _json(run.layout.output("quality_gate", "profile"))
    if profile is None:  # a run gated before the profile was written: merge the shard profiles
        shard_results = results(run, "validate_shard", required=False)
        if not shard_results:
            return None
        from ..quality.release import distributions as merged

        profile = merged(_json(m["outputs"]["result"])["profile"] for m in shard_results)
    diversity = _json(run.layout.output("quality_gate", "diversity")) or {}
    return {**profile, "openings": ((diversity.get("openings") or {}).get("top") or [])[:10]}


def gate(run: RunContext) -> dict[str, Any] | None:
    """The gate table (observed vs expected, pass or fail, per expectation), the override if any, and
    which of its files exist (report.html, the Data Docs site)."""
    report = _json(run.layout.output("quality_gate", "report"))
    if report is None:
        return None
    return {"passed": report.get("passed"), "override": report.get("override"),
            "expectations": report.get("expectations", []), "metrics": report.get("metrics", {}),
            "shards": report.get("shards", []), "data_docs": bool(report.get("data_docs")),
            "quarantined": storage.exists(run.layout.quarantine)}


def _sample(uri: str, limit: int, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    names = storage.parquet_schema(uri).names
    columns = [c for c in (*SAMPLE_COLUMNS, *extra) if c in names]
    for batch in storage.iter_batches(uri, columns, limit):
        rows = batch.to_pylist()[:limit]
        for r in rows:
            text = r.get("text") or ""
            r["text"] = text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else "")
        return rows
    return []


def published_sample(run: RunContext, limit: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """A few documents this run published (or, before publish, the documents the gate checks)."""
    marker = read_marker(run.layout.marker("publish"))
    uris: list[str] = []
    if marker:
        manifest = _json(marker["outputs"]["manifest"]) or {}
        versions_uri = posixpath.dirname(marker["outputs"]["version"].rstrip("/"))
        uris = [file_uri(versions_uri, manifest, f) for f in manifest.get("files", [])
                if (f.get("version") or manifest.get("version")) == run.version]
    else:
        uris = list((read_marker(run.layout.marker("top_up")) or {}).get("outputs", {}).get("documents", []))
    out: list[dict[str, Any]] = []
    for uri in uris:
        if len(out) >= limit:
            break
        out.extend(_sample(uri, limit - len(out)))
    return out


REMOVED_STAGES = ("filter_shard", "dedup", "near_dedup", "decontaminate")


def _removed_counts(counts: dict[str, Any]) -> dict[str, int | None]:
    """How many documents each quality stage removed (lineage counts; None when not known yet)."""
    filtered = counts.get("filtered_out")
    return {"filter_shard": sum(filtered.values()) if filtered is not None else None,
            "dedup": counts.get("exact_duplicates"), "near_dedup": counts.get("near_duplicates"),
            "decontaminate": counts.get("contaminated")}


def removed_sample(run: RunContext, counts: dict[str, Any], per_stage: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """A few documents each quality stage removed, with the stage and the reason. A stage that removed
    nothing (by the lineage counts) is not opened: its shards' removed files are empty."""
    out = []
    removed = _removed_counts(counts)
    for stage in REMOVED_STAGES:
        if removed[stage] == 0:
            continue
        names = set(storage.list_names(run.layout.stage_dir(stage)))
        single, folder = run.layout.removed(stage), run.layout.removed_dir(stage)
        uris = [single] if posixpath.basename(single) in names else []
        if posixpath.basename(folder) in names:
            uris += [u for u in storage.list_files(folder) if u.endswith(".parquet")]
        taken = 0
        for uri in uris:
            if taken >= per_stage:
                break
            rows = _sample(uri, per_stage - taken, ("filter_reason", "duplicate_of", "similarity"))
            for r in rows:
                r["stage"], r["reason"] = stage, r.pop("filter_reason", None) or stage
            out.extend(rows)
            taken += len(rows)
    return out


def budget(run: RunContext, lineage: dict[str, Any]) -> dict[str, Any]:
    """The run's budget: limits and what was used (live from the shards' budget entries while running)."""
    from ..generation import read_budget

    block = dict(lineage.get("budget") or {})
    block["live"] = read_budget(run.layout.budget_dir)
    block["limits"] = block.get("limits") or run.spec.generation.budget.model_dump()
    return block


def run_report(spec: CorpusSpec, run_id: str) -> dict[str, Any]:
    """Everything the run page shows."""
    run = run_context(spec, run_id)
    if not storage.list_names(run.layout.run_uri):
        raise NotStarted(f"run {run.run_id!r} of corpus {spec.name!r} has written nothing yet (to {run.layout.run_uri}); "
                         "its page fills in once its first stage commits")
    lineage, has_lineage = run_lineage(run)
    counts = lineage.get("counts") or {}
    dist = distributions(run)
    profile_scores = (dist or {}).get("scores")
    return {
        "corpus": spec.name, "dag_id": spec.dag_id, "run_id": run.run_id, "storage": run.layout.run_uri,
        "stages": stage_states(run), "funnel": funnel(run, counts), "counts": counts,
        "progress": run_progress(run), "topics": topics(run), "distributions": dist,
        "gate": gate(run), "published": published_sample(run), "removed": removed_sample(run, counts),
        "budget": budget(run, lineage), "model": lineage.get("model"), "has_lineage": has_lineage,
        "shortfall_reason": counts.get("shortfall_reason"), "approval": approval(run),
        "judge": judge(lineage, profile_scores),
    }


def judge(lineage: dict[str, Any], scores: dict[str, Any] | None) -> dict[str, Any] | None:
    """The LLM judge of the run (spec ``judge``): its model, documents scored / unscored (why) / refined,
    its tokens, and from the gate's merged profile the 0-5 histogram and mean of each rubric dimension and
    the mean overall score per format and audience. None when the judge is off."""
    from ..quality.release import hist_mean
    from ..spec.judge import DIMENSIONS

    block = lineage.get("judge")
    if not block:
        return None
    out = {**block, "histogram": {}, "means": {}, "mean_by": {}}
    if scores:
        out["histogram"] = {d: scores["hist"][d] for d in DIMENSIONS}
        out["means"] = {d: hist_mean(scores["hist"][d]) for d in DIMENSIONS}
        for group, values in (scores.get("by") or {}).items():
            per = {}
            for key, hists in sorted(values.items()):
                dims = [hist_mean(hists[d]) for d in DIMENSIONS]
                if all(m is not None for m in dims):
                    per[key] = round(sum(dims) / len(dims), 2)
            out["mean_by"][group] = per
    return out


def approval(run: RunContext) -> dict[str, Any] | None:
    """The release approval (spec ``publish.approval``): its state and every decision made, or None when the
    spec requires none and none was ever made."""
    from ..stages import approval as approvals

    made = approvals.decisions(run)
    state = approvals.state(run) or (made[-1] if made else None)
    return {"state": state, "decisions": made} if state else None


# ---------------------------------------------------------------------------------------------- files
GATE_FILES = {"report.html": ("quality_gate", "report_html")}
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css", ".js": "text/javascript", ".json": "application/json",
          ".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml", ".ico": "image/x-icon",
          ".otf": "font/otf", ".ttf": "font/ttf", ".woff": "font/woff", ".woff2": "font/woff2"}


def content_type(name: str) -> str:
    return _TYPES.get(posixpath.splitext(name)[1].lower(), "application/octet-stream")


def run_file(spec: CorpusSpec, run_id: str, rel: str) -> tuple[bytes, str]:
    """A file of the run the pages serve: ``lineage.json``, the gate's ``report.html``, or a page of its
    Data Docs site (``data_docs/...``). A path that leaves the site, or any other file: NotFound."""
    run = run_context(spec, run_id)
    if rel == LINEAGE:
        uri = run.layout.lineage
    elif rel in GATE_FILES:
        uri = run.layout.output(*GATE_FILES[rel])
    elif rel.startswith(OUTPUTS["quality_gate"]["data_docs"] + "/"):
        inner = rel.split("/", 1)[1]
        clean = posixpath.normpath(inner)
        if not inner or clean.startswith(("..", "/")) or clean == "." or "\\" in inner:
            raise NotFound(f"{rel!r}: not a file of the run's Data Docs site")
        uri = storage.join(run.layout.output("quality_gate", "data_docs"), clean)
    else:
        raise NotFound(f"{rel!r}: the pages serve lineage.json, report.html and data_docs/... only")
    try:
        return storage.read_bytes(uri), content_type(rel)
    except FileNotFoundError:
        raise NotFound(f"{rel!r}: not in run {run.run_id!r} (yet)") from None


# ---------------------------------------------------------------------------------------------- diff
def version_profile(spec: CorpusSpec, v: dict[str, Any]) -> dict[str, Any] | None:
    """The distributions of the documents a version added (its run's gate profile)."""
    return distributions(RunContext.create(spec, v["run_id"]))


def version_diff(spec: CorpusSpec, a: str, b: str) -> dict[str, Any]:
    """Two versions side by side: rows, distributions, gate metrics, and what ``b`` added."""
    left, right = version(spec, a), version(spec, b)
    key = lambda f, own: (f.get("version") or own, f["path"])  # noqa: E731 - a file, wherever it was published
    left_files = {key(f, a) for f in left["files"]}
    right_files = {key(f, b) for f in right["files"]}
    added = [f for f in right["files"] if key(f, b) not in left_files]
    removed = [f for f in left["files"] if key(f, a) not in right_files]
    metrics = sorted(set(left["metrics"]) | set(right["metrics"]))
    return {
        "a": left, "b": right,
        "profiles": {"a": version_profile(spec, left), "b": version_profile(spec, right)},
        "metrics": [{"metric": m, "a": left["metrics"].get(m), "b": right["metrics"].get(m)} for m in metrics],
        "added_files": added, "removed_files": removed,
        "added_rows": sum(f.get("rows", 0) for f in added),
        "b_builds_on_a": right["base_version"] == left["version"],
    }


def spec_text(spec: CorpusSpec) -> str:
    """The spec as loaded (defaults filled in), as the run pins it."""
    return json.dumps(spec.canonical(), indent=2, sort_keys=False)

