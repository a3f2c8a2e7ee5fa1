"""Seed stage: read the curated outline (course -> units) named by the spec into a seeds table."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from . import storage
from .run import RunContext, StageResult


class SeedError(ValueError):
    """A seed file is malformed; the message names the file, the field and what was expected."""


def read_outline(path: Path) -> list[dict[str, str]]:
    """Flatten an outline YAML into one row per unit, validating every field on the way."""
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeedError(f"{file}: expected an existing outline file") from None
    except yaml.YAMLError as exc:
        raise SeedError(f"{file}: expected valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), list) or not data["subjects"]:
        raise SeedError(f"{file}: subjects: expected a non-empty list of subjects")
    rows: list[dict[str, str]] = []
    for i, subj in enumerate(data["subjects"]):
        where = f"subjects[{i}]"
        if not isinstance(subj, dict):
            raise SeedError(f"{file}: {where}: expected a mapping with subject, course, units")
        subject = _text(subj, "subject", file, where)
        course = _text(subj, "course", file, where)
        units = subj.get("units")
        if not isinstance(units, list) or not units:
            raise SeedError(f"{file}: {where}.units: expected a non-empty list of units")
        for j, unit in enumerate(units):
            uwhere = f"{where}.units[{j}]"
            if not isinstance(unit, dict):
                raise SeedError(f"{file}: {uwhere}: expected a mapping with title and description")
            title = _text(unit, "title", file, uwhere)
            description = _text(unit, "description", file, uwhere)
            seed_id = hashlib.sha256(f"{subject}\x1f{course}\x1f{title}".encode()).hexdigest()[:16]
            rows.append(
                {"seed_id": seed_id, "subject": subject, "course": course, "unit": title, "description": description}
            )
    ids = [r["seed_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SeedError(f"{file}: units: expected unique (subject, course, title) triples")
    return rows


def _text(obj: dict[str, Any], key: str, file: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{file}: {where}.{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def load_seeds(run: RunContext) -> StageResult:
    import pyarrow as pa

    rows = read_outline(run.spec.outline_path)
    uri = run.run_uri("seeds", "seeds.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist(rows))
    sha = hashlib.sha256(run.spec.outline_path.read_bytes()).hexdigest()
    stats = {"seeds": len(rows), "subjects": len({r["subject"] for r in rows}), "outline_sha256": sha}
    return StageResult("seeds", {"seeds": uri}, stats).save(run)
