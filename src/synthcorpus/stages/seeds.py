"""seeds: read every configured seed source (outline, web samples, instructions) into one table.

Reads the spec's seed files; writes ``seeds/seeds.parquet`` (columns: ``SEED_COLUMNS``). The readers
live in :mod:`synthcorpus.seeds`; web samples and instructions are cleaned on the way by
:class:`~synthcorpus.quality.seed_clean.SeedCleaner` (their ``clean`` section: markup, boilerplate, Gopher
rules), with the rows removed per reason in each source's stats (``cleaned``). Its settings are under
``seeds``, so USES covers them: changing one re-runs seeds and what reads it.
"""

from __future__ import annotations

from typing import Any

from .. import storage
from .contract import RunContext, StageResult

NAME = "seeds"
READS: tuple[str, ...] = ()
MAPPED = False
USES: tuple[str, ...] = ("seeds",)


def fingerprint_inputs(run: RunContext, shard: int | None = None) -> dict[str, str | None]:
    """Content hashes of the seed files (outline, web samples, instructions)."""
    from ..seeds import SOURCE_KINDS
    from .contract import file_sha256

    spec = run.spec
    files = {"seeds.outline": file_sha256(spec.outline_path.as_uri())} if spec.outline_path is not None else {}
    for name in SOURCE_KINDS:
        if (source := getattr(spec.seeds, name)) is not None:
            files[f"seeds.{name}"] = file_sha256(spec.resolve_uri(source.path))
    return files


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..hashing import sha256_file
    from ..quality.seed_clean import SeedCleaner
    from ..seeds import KINDS, SOURCE_KINDS, outline_rows, read_source, seed_id, seeds_schema

    spec = run.spec
    rows: list[dict[str, str | None]] = []
    sources: dict[str, dict[str, Any]] = {}
    subjects = 0
    if spec.outline_path is not None:
        outline = outline_rows(spec.outline_path)
        rows.extend(outline)
        subjects = len({r["subject"] for r in outline})
        sources["outline"] = {
            "path": str(spec.outline_path), "format": "outline", "sha256": sha256_file(str(spec.outline_path)),
            "rows_read": len(outline), "kept": len(outline),
        }
    for name, kind in SOURCE_KINDS.items():
        source = getattr(spec.seeds, name)
        if source is None:
            continue
        cleaner = SeedCleaner(source.clean, source.min_chars)
        read = read_source(source, spec.resolve_uri(source.path), f"seeds.{name}", cleaner)
        rows.extend(
            {"seed_id": seed_id(kind, t), "kind": kind, "text": t, "subject": None, "course": None, "unit": None}
            for t in read.texts
        )
        sources[name] = read.stats()
    uri = run.layout.output(NAME, "seeds")
    storage.write_parquet(uri, pa.Table.from_pylist(rows, schema=seeds_schema()))
    stats = {
        "seeds": len(rows),
        "by_kind": {k: sum(r["kind"] == k for r in rows) for k in KINDS},
        "subjects": subjects,
        "sources": sources,
    }
    return StageResult(NAME, {"seeds": uri}, stats)
