"""validate_shard (mapped): the ``documents`` expectations of the release suite (GX Core) on one
clean shard, plus a small profile of it (counts per format, audience, topic and language, the
word-count histogram, opening counts) that the gate merges without reading documents again.

Reads document shard N of ``top_up`` (decontaminated, trimmed to the requested count, plus top-up rounds); writes ``validate_shard/shard-N/result.json`` (expectations,
profile), ``validate_shard/shard-N/validation.json`` and the GX result files under
``validate_shard/shard-N/gx/`` (rendered into the run's one Data Docs site by ``quality_gate``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "validate_shard"
READS = ("top_up",)
MAPPED = True
# The release suite's ``documents`` checks (quality.release.release_checks) and the suite's name.
USES: tuple[str, ...] = ("name", "prompts.formats", "prompts.audiences", "prompts.languages", "quality.min_words",
                         "quality.max_words", "quality.expectations")
PROFILE_BATCH = 2048

log = logging.getLogger(__name__)


def suite_name(run: RunContext) -> str:
    return f"{run.spec.name}_release"


def run(run: RunContext, shard: int | None) -> StageResult:
    from ..layout import shard_name
    from ..quality.gate import gx_result_files, validate
    from ..quality.release import profile_batches, release_checks
    from ..spec import GATE_COLUMNS

    top_up = result(run, "top_up")
    document_uri = dict(zip(top_up["shards"], top_up["outputs"]["documents"]))[shard]
    name = shard_name(shard)
    checks = [c for c in release_checks(run.spec) if c.batch == "documents"]
    # One shard is bounded by the shard plan: read once, profiled batch by batch, validated by GX as one
    # pandas batch.
    table = storage.read_parquet(document_uri)
    table = table.select([c for c in GATE_COLUMNS["documents"] if c in table.column_names])
    profile = profile_batches(table.to_batches(max_chunksize=PROFILE_BATCH))
    frame = table.to_pandas()
    del table
    with tempfile.TemporaryDirectory(prefix="synthcorpus-gx-") as tmp:
        # Rendered once for the whole run by quality_gate, from the result files kept here.
        report = validate({"documents": frame}, checks, Path(tmp), suite_name=suite_name(run), run_name=name, data_docs=False)
        gx_files = []
        for rel, data in gx_result_files(Path(tmp)).items():
            storage.write_bytes(run.layout.shard_dir(NAME, shard, rel), data)
            gx_files.append(rel)
    validation_uri = run.layout.shard_dir(NAME, shard, "validation")
    storage.write_json(validation_uri, report.validation)
    result_uri = run.layout.shard_dir(NAME, shard, "result")
    storage.write_json(result_uri, {"expectations": report.expectations, "gx_files": gx_files, "profile": profile})
    log.info("shard %s: documents expectations %s (%d rows)\n%s", name, "passed" if report.passed else "FAILED",
             profile["rows"], report.table())
    return StageResult(NAME, {"result": result_uri, "validation": validation_uri, "source": document_uri},
                       {"rows": profile["rows"], "passed": report.passed}, shard=shard)
