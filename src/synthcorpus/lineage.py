"""Per-run lineage: one ``lineage.json`` that says exactly what produced a corpus version.

Per-row provenance lives in the data itself (run_id, prompt_id, topic, format, audience, language,
model, template, template_version); this file ties those values to the spec, code, model file,
sampling parameters, templates, per-stage counts and the gate result.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__, storage
from .run import RunContext


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Package version, plus the git commit when running from a checkout (None in an installed image)."""
    commit = None
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "synthcorpus", "version": __version__, "git_commit": commit}


def _stage(run: RunContext, name: str) -> dict[str, Any]:
    uri = run.run_uri(name, "_stage.json")
    return storage.read_json(uri) if storage.exists(uri) else {}


def _markers(run: RunContext, stage: str) -> list[dict[str, Any]]:
    return [storage.read_json(u) for u in storage.list_files(run.run_uri(stage)) if u.endswith(".commit.json")]


def build_lineage(run: RunContext, gate: dict[str, Any] | None) -> dict[str, Any]:
    generated = _markers(run, "generate")
    filtered = _markers(run, "filter")
    prompts = _stage(run, "prompts")
    reasons: dict[str, int] = {}
    confusion: dict[str, dict[str, int]] = {}
    for m in filtered:
        for k, v in m.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
        for want, got in m.get("language_confusion", {}).items():
            for lang, n in got.items():
                confusion.setdefault(want, {})[lang] = confusion.get(want, {}).get(lang, 0) + n
    models = {(m["model"]["model"], m["model"].get("model_sha256")): m["model"] for m in generated if m.get("model")}
    spec = run.spec
    return {
        "corpus": spec.name,
        "run_id": run.run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": {"path": str(spec.source_path) if spec.source_path else None, "sha256": spec.spec_hash(), "content": spec.canonical()},
        "code": code_version(),
        "model": next(iter(models.values()), None),
        "models": list(models.values()),
        "sampling": generated[0].get("sampling") if generated else None,
        "templates": prompts.get("stats", {}).get("templates", {}),
        "seeds": _stage(run, "seeds").get("stats", {}),
        "topics": _stage(run, "topics").get("stats", {}),
        "decontamination": _stage(run, "decontam").get("stats", {}),
        "diversity": storage.read_json(run.run_uri("diversity.json")) if storage.exists(run.run_uri("diversity.json")) else None,
        "counts": {
            "seeds": _stage(run, "seeds").get("stats", {}).get("seeds"),
            "topics": _stage(run, "topics").get("stats", {}).get("topics"),
            "topics_kept": _stage(run, "topics").get("stats", {}).get("kept"),
            "prompts": prompts.get("stats", {}).get("prompts"),
            "generated": sum(m.get("rows", 0) for m in generated),
            "filtered_out": reasons,
            "after_filters": sum(m.get("kept", 0) for m in filtered),
            "after_dedup": _stage(run, "dedup").get("stats", {}).get("kept"),
            "near_duplicates": _stage(run, "near_dedup").get("stats", {}).get("removed", 0),
            "after_near_dedup": _stage(run, "near_dedup").get("stats", {}).get("kept"),
            "contaminated": _stage(run, "decontam").get("stats", {}).get("removed", 0),
            "prompt_tokens": sum(m.get("prompt_tokens", 0) for m in generated),
            "completion_tokens": sum(m.get("completion_tokens", 0) for m in generated),
            "generation_wall_s": round(sum(m.get("wall_s", 0.0) for m in generated), 3),
            "model_load_s": round(sum(m.get("load_s", 0.0) for m in generated), 3),
            "regenerated": sum(m.get("regenerated", 0) for m in generated),
            "generation_failed": sum(m.get("failed", 0) for m in generated),
            "gpu_seconds": round(sum(m.get("gpu_seconds", 0.0) for m in generated), 1),
            "cost_usd": round(sum(m.get("cost_usd", 0.0) for m in generated), 4),
        },
        "language_confusion": confusion,
        "gate": gate,
        "provenance_columns": list(PROVENANCE_COLUMNS),
    }


PROVENANCE_COLUMNS = (
    "run_id", "prompt_id", "seed_id", "seed_kind", "topic_id", "topic", "topic_in_prompt", "format", "audience",
    "language", "style_index", "model", "template", "template_version",
)


def write_run_lineage(run: RunContext, gate: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    lineage = build_lineage(run, gate)
    uri = run.run_uri("lineage.json")
    storage.write_json(uri, lineage)
    return uri, lineage
