"""What a published version is made of: the columns it keeps, its HF dataset card, batches cut into
data files, and the check of its files against its manifest. The ``publish`` stage
(``synthcorpus.stages.publish``) writes versions with these.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import yaml

from . import storage
from .layout import DATA_FILES_PATTERN, MANIFEST, join
from .lineage import PROVENANCE_COLUMNS
from .spec.vocabulary import JUDGE_DIMENSIONS

if TYPE_CHECKING:
    from .spec import CorpusSpec

log = logging.getLogger(__name__)

PUBLISHED_COLUMNS = (
    "text",
    *PROVENANCE_COLUMNS,
    "prompt",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "n_words",
    # the judge's (when on): scores 0-5 per rubric dimension, their mean, scored or not, rewritten or not
    *(f"score_{d}" for d in JUDGE_DIMENSIONS), "score_overall", "judge_status", "refined",
)


class PublishError(RuntimeError):
    pass


class ManifestError(ValueError):
    """A published version's manifest (or a file it lists) is unreadable or not what it says: a refresh that
    built on it could silently drop or duplicate earlier documents, so it stops before generating anything."""


_MANIFEST_KEYS = {"corpus": str, "version": str, "rows": int, "files": list}
_FILE_KEYS = {"path": str, "rows": int, "bytes": int, "sha256": str}


def read_manifest(uri: str, corpus: str | None = None) -> dict[str, Any]:
    """A version's manifest, checked field by field (ManifestError naming the file and the field)."""
    try:
        manifest = storage.read_json(uri)
    except FileNotFoundError:
        raise ManifestError(f"{uri}: expected the manifest of a published version, found nothing") from None
    except storage.StorageError as exc:
        raise ManifestError(f"{uri}: expected a JSON manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{uri}: expected a JSON object")
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise ManifestError(f"{uri}: field '{key}': expected {kind.__name__}, got {manifest.get(key)!r:.60}")
    if corpus is not None and manifest["corpus"] != corpus:
        raise ManifestError(f"{uri}: field 'corpus': expected {corpus!r}, got {manifest['corpus']!r}")
    for i, entry in enumerate(manifest["files"]):
        for key, kind in _FILE_KEYS.items():
            if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
                raise ManifestError(f"{uri}: field 'files[{i}].{key}': expected {kind.__name__}")
    if sum(f["rows"] for f in manifest["files"]) != manifest["rows"]:
        raise ManifestError(f"{uri}: field 'rows': expected the sum of files[].rows "
                            f"({sum(f['rows'] for f in manifest['files'])}), got {manifest['rows']}")
    return manifest


def file_uri(versions_uri: str, manifest: dict[str, Any], entry: dict[str, Any]) -> str:
    """Where a manifest's file lives: in its own version, or (``version`` set) in the earlier version that
    published it -- a refresh references earlier data files instead of copying them."""
    return join(versions_uri, entry.get("version") or manifest["version"], entry["path"])


def check_files(manifest_uri: str, manifest: dict[str, Any]) -> None:
    """Every data file a manifest lists exists with the size it records (cheap; ``verify_version`` re-hashes)."""
    versions_uri = manifest_uri.rsplit("/", 2)[0]
    for i, entry in enumerate(manifest["files"]):
        uri = file_uri(versions_uri, manifest, entry)
        found = storage.size(uri)
        if found != entry["bytes"]:
            raise ManifestError(f"{manifest_uri}: files[{i}] {uri}: expected {entry['bytes']} bytes, "
                                + ("the file is missing" if found is None else f"found {found}"))


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _gate_status(gate: dict[str, Any]) -> str:
    if gate.get("passed"):
        return "passed"
    if gate.get("override"):
        return f"FAILED, published by override: {gate['override']['reason']}"
    return "FAILED"


def _budget_status(budget: dict[str, Any]) -> str:
    limits = {k: v for k, v in (budget.get("limits") or {}).items() if v is not None}
    if budget.get("stopped_by_budget"):
        return (f"stopped by budget ({', '.join(budget.get('reached') or limits)}): "
                f"{budget.get('not_generated', 0)} prompts not generated")
    return ("within " + ", ".join(f"{k} {v}" for k, v in limits.items())) if limits else "unlimited"


# The run metrics the card's "Changes" section compares with the previous version's.
CHANGE_METRICS = ("documents", "filtered_share", "duplicate_rate", "language_match_rate", "contaminated",
                  "n_words_p50", "max_opening_share")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def changes_section(manifest: dict[str, Any], lineage: dict[str, Any], base_lineage: dict[str, Any] | None) -> list[str]:
    """The card's release notes: rows added since the previous version, the gate's metrics against the
    previous version's, the override and the approval if any, and links to both versions' lineage."""
    gate = lineage.get("gate") or {}
    base = manifest.get("base_version")
    new = manifest.get("new_rows", manifest["rows"])
    lines = ["## Changes", ""]
    if base:
        lines.append(f"- **+{new} rows** since version `{base}` ({manifest['rows']} in all); earlier rows unchanged, "
                     f"referenced from `../{base}/`.")
    else:
        lines.append(f"- First version: {new} rows.")
    override = gate.get("override")
    if override:
        lines.append(f"- Quality gate **overridden**: \"{override.get('reason')}\" ({override.get('at')}); failed: "
                     + ", ".join(override.get("failed_expectations") or []) + ".")
    else:
        lines.append(f"- Quality gate: {_gate_status(gate)}.")
    approval = lineage.get("approval")
    if approval and approval.get("status") == "approved":
        who = (approval.get("by") or {}).get("name") or (approval.get("by") or {}).get("id") or "unknown"
        comment = f": \"{approval['comment']}\"" if approval.get("comment") else ""
        lines.append(f"- **Approved by {who}** at {approval.get('at')}{comment} (asked {approval.get('requested_at')}).")
    links = "[`lineage.json`](lineage.json)"
    if base:
        links += f"; previous version: [card](../{base}/README.md), [`lineage.json`](../{base}/lineage.json)"
    lines += [f"- Lineage: {links}.", ""]
    now = gate.get("metrics") or {}
    before = ((base_lineage or {}).get("gate") or {}).get("metrics") or {}
    if now:
        head = f"| gate metric | this version | {f'`{base}`' if base else 'previous'} | change |"
        lines += [head, "|---|---|---|---|"]
        for k in CHANGE_METRICS:
            a, b = now.get(k), before.get(k)
            d = round(a - b, 6) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            change = "–" if d is None else ("0" if d == 0 else (f"+{_fmt(d)}" if d > 0 else _fmt(d)))
            lines.append(f"| {k} | {_fmt(a)} | {_fmt(b)} | {change} |")
        lines.append("")
    return lines


def dataset_card(spec: CorpusSpec, manifest: dict[str, Any], lineage: dict[str, Any],
                 base_lineage: dict[str, Any] | None = None) -> str:
    counts = lineage["counts"]
    header = {
        "pretty_name": f"synthcorpus {spec.name}",
        "license": spec.publish.license,
        "language": list(spec.prompts.languages),
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "synthcorpus"],
        "size_categories": [_size_category(manifest["rows"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_files(manifest)}]}],
    }
    model = lineage.get("model") or {}
    gate = lineage.get("gate") or {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# synthcorpus {spec.name} — version {manifest['version']}",
        "",
        spec.description or "Synthetic pre-training corpus generated by synthcorpus.",
        "",
        "## Stats",
        "",
        "| | |",
        "|---|---|",
        f"| documents | {manifest['rows']} |",
        f"| new in this version | {manifest.get('new_rows', manifest['rows'])}"
        + (f" (on top of version {manifest['base_version']}) |" if manifest.get("base_version") else " (first version) |"),
        f"| prompts | {counts.get('prompts')} |",
        f"| generated | {counts.get('generated')} |",
        f"| removed by filters | {json.dumps(counts.get('filtered_out'))} |",
        f"| after exact dedup | {counts.get('after_dedup')} |",
        f"| removed as benchmark contamination | {counts.get('contaminated')} |",
        f"| completion tokens | {counts.get('completion_tokens')} |",
        f"| generation budget | {_budget_status(lineage.get('budget') or {})} |",
        f"| model | {model.get('model')} ({model.get('engine')}"
        + (f", {model.get('model_file')}, sha256 {str(model.get('model_sha256'))[:12]}…) |" if model.get("model_sha256") else ") |"),
        f"| formats | {', '.join(spec.prompts.formats)} |",
        f"| audiences | {', '.join(spec.prompts.audiences)} |",
        f"| quality gate | {_gate_status(gate)} "
        f"({gate.get('counts', {}).get('successful')}/{gate.get('counts', {}).get('evaluated')} expectations) |",
        f"| run | {manifest['run_id']} |",
        "",
        *changes_section(manifest, lineage, base_lineage),
        *judge_section(lineage),
        "Every row carries its provenance: " + ", ".join(f"`{c}`" for c in PROVENANCE_COLUMNS) + ".",
        "`lineage.json` records the spec, code version, model file hash, sampling parameters and template hashes;",
        "`manifest.json` lists every data file with its sha256 and row count.",
        "",
        "Data files are listed relative to this version's folder; files published by an earlier version are",
        "referenced in place (`../<version>/data/...`), not copied. From the corpus folder:",
        "",
        "```python",
        "from datasets import load_dataset",
        f"files = {data_files(manifest)!r}",
        'ds = load_dataset("parquet", data_files=files, split="train")',
        "```",
        "",
    ]
    return "\n".join(lines)


def judge_section(lineage: dict[str, Any]) -> list[str]:
    """The card's judge section: which model scored the documents, how many it scored, refined or could not
    score (why), the mean and quartiles of each rubric dimension, and the score columns of the rows."""
    judge = lineage.get("judge")
    if not judge:
        return []
    metrics = (lineage.get("gate") or {}).get("metrics") or {}
    unscored = ", ".join(f"{k} {v}" for k, v in sorted((judge.get("unscored_reasons") or {}).items())) or "none"
    lines = ["## Judge scores", "",
             f"Every document was judged by `{judge.get('model')}` ({judge.get('engine')}) on a 0–5 rubric; documents "
             f"below {', '.join(f'{k} {v:g}' for k, v in (judge.get('thresholds') or {}).items())} were rewritten from "
             f"its critique (up to {judge.get('max_rounds')} round(s), the best-scoring version kept). In this run: "
             f"{judge.get('scored')} of {judge.get('input')} scored, {judge.get('refined')} refined, unscored: {unscored}; "
             f"{judge.get('judge_completion_tokens')} judge and {judge.get('rewrite_completion_tokens')} rewrite completion "
             "tokens (apart from generation's). Scores of the new documents:", "",
             "| dimension | mean | p25 | p50 | column |", "|---|---|---|---|---|"]
    for d in JUDGE_DIMENSIONS:
        lines.append(f"| {d} | {_fmt(metrics.get(f'score_{d}_mean'))} | {_fmt(metrics.get(f'score_{d}_p25'))} | "
                     f"{_fmt(metrics.get(f'score_{d}_p50'))} | `score_{d}` |")
    lines += ["", "Rows also carry `score_overall` (the mean of the four), `judge_status` (`scored` or `unscored`) and "
              "`refined`; the critiques and every round are kept with the run, in its `judge` stage's shards.", ""]
    return lines


def data_files(manifest: dict[str, Any]) -> list[str] | str:
    """The version's data files relative to its folder (the HF ``data_files`` of its dataset card): the
    ``data/train-*.parquet`` pattern when it holds all of them, else every file, earlier versions' as
    ``../<version>/data/...``."""
    own = manifest["version"]
    if all((f.get("version") or own) == own for f in manifest["files"]):
        return DATA_FILES_PATTERN
    return [f["path"] if (f.get("version") or own) == own else f"../{f['version']}/{f['path']}" for f in manifest["files"]]


def conform(pa: Any, batch: Any, schema: Any) -> Any:
    """A batch with exactly ``schema``'s columns and types (a shard may lack a column or type it as null)."""
    arrays = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
              for f in schema]
    return pa.record_batch(arrays, schema=schema)


def rebatch(batches: Any, per_file: int) -> Any:
    """Split batches so none crosses a ``per_file`` boundary of the running row count."""
    written = 0
    for batch in batches:
        while batch.num_rows:
            room = per_file - written % per_file
            head, batch = batch.slice(0, room), batch.slice(room)
            written += head.num_rows
            yield head


def release_event(corpus: str, run_id: str, marker: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` of the asset event ``publish`` emits: what a consumer needs to find and check the
    release without reading the run (from publish's committed marker)."""
    stats, outputs = marker["stats"], marker["outputs"]
    return {
        "corpus": corpus,
        "run_id": run_id,
        "version": stats["version"],
        "rows": stats["rows"],
        "new_rows": stats.get("new_rows", stats["rows"]),
        "base_version": stats.get("base_version"),
        "files": stats["files"],
        "gate": stats["gate"],
        "version_uri": outputs["version"],
        "manifest": outputs["manifest"],
        "latest_kept": stats.get("latest_kept"),
    }


def verify_version(version_uri: str) -> dict[str, Any]:
    """Re-hash every file of a published version (its own and those it references in earlier versions)
    against its manifest; raises PublishError on mismatch."""
    manifest = storage.read_json(join(version_uri, MANIFEST))
    versions_uri = version_uri.rstrip("/").rsplit("/", 1)[0]
    for f in manifest["files"]:
        uri = file_uri(versions_uri, manifest, f)
        if storage.sha256(uri)[1] != f["sha256"]:
            raise PublishError(f"{uri}: sha256 does not match {join(version_uri, MANIFEST)}")
    return manifest
