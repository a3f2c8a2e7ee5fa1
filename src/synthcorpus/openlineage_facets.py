"""OpenLineage datasets and facets of one stage task, built from its committed marker (no Airflow here:
the provider-facing extractor is :mod:`synthcorpus.openlineage_extractor`, which reads the markers through
the stage contract and hands them to :func:`stage_lineage`).

Naming (the OpenLineage naming spec, as the client's ``openlineage.client.naming.dataset`` implements it):
a stored URI becomes ``(namespace, name)`` -- ``file:///a/b`` -> ``("file", "/a/b")`` (``LocalFileSystem``),
``s3://bucket/key`` -> ``("s3://bucket", "key")`` (``S3``), any other scheme ``("{scheme}://{host}", path)``.

Datasets: one per stage of a run, named by the run layout's stage folder
(``{storage}/{corpus}/runs/{run_id}/{stage}``): the stage's committed result, i.e. the files its marker
lists as outputs (a pass-through stage, e.g. ``decontaminate`` without references, lists its input's
files; ``top_up`` lists the documents the gate validates, wherever they live). ``publish``'s dataset is the
published version (``{storage}/{corpus}/versions/{version}``), with a ``version`` facet. A stage's inputs
are the datasets of the stages it READS (the stage table); a mapped shard task writes its shard of its
stage's dataset (the job is the task, one per stage, as Airflow names it).

Facets:
- outputs: ``schema`` (the first Parquet output's footer; JSON outputs: their top-level keys; the version:
  its manifest's schema) and ``outputStatistics`` (rows from Parquet footers, bytes, files of the outputs);
- the gate's input (the ``top_up`` documents it validated): ``dataQualityMetrics`` (rows, files, the word
  count quantiles, every run metric as a column metric) and ``dataQualityAssertions`` (one per expectation
  of the report, with its success) -- also on a failed gate, from the report it leaves;
- the run: ``synthcorpus`` (:class:`SynthcorpusRunFacet`: corpus, run id, stage, shard, spec sha256, model
  and revision, code version).

Cheap by construction: markers, small JSON outputs (base, report, manifest) and Parquet footers only; files
are measured concurrently within a time budget (the provider kills an extraction after ``[openlineage]
execution_timeout``): statistics that cannot be measured in time are left out, never guessed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlparse

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    RunFacet,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    output_statistics_output_dataset,
    schema_dataset,
)

from . import __version__, storage
from .layout import RunLayout

log = logging.getLogger(__name__)

# Where a stage's committed result is not its own folder's files.
VERSION_STAGE = "publish"  # its dataset is the published version
GATE_STAGE = "quality_gate"
GATED_STAGE = "top_up"  # the documents the gate validates (and publish publishes)
# Outputs that are folders, not files: not measured (a Data Docs site is ~4 MB of fonts and images).
FOLDER_OUTPUTS = {("quality_gate", "data_docs"), ("publish", "version")}
MEASURE_BUDGET_S = 5.0  # below the provider's default [openlineage] execution_timeout (10 s)
MEASURE_THREADS = 8
MAX_JSON_SCHEMA_BYTES = 1 << 20  # a JSON output read for its keys (base, report, result) stays small
ACTUAL_CHARS = 200  # an assertion's observed value, as text

# The run facet's own JSON schema (a custom facet: OpenLineage requires _producer and _schemaURL; its
# schema is this dict, which the tests validate events against).
RUN_FACET_KEY = "synthcorpus"
RUN_FACET_SCHEMA_URL = "urn:synthcorpus:openlineage:facets:1-0-0:SynthcorpusRunFacet"
RUN_FACET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": RUN_FACET_SCHEMA_URL,
    "description": "What produced one synthcorpus stage task: corpus, storage run, stage and shard, the spec's "
                   "sha256, the generation model and its revision, the code version.",
    "type": "object",
    "required": ["_producer", "_schemaURL", "corpus", "stage", "specSha256", "model", "code"],
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri", "const": RUN_FACET_SCHEMA_URL},
        "corpus": {"type": "string", "minLength": 1},
        "runId": {"type": "string", "minLength": 1, "description": "the storage run id (absent on START: it is a "
                                                                   "DAG param, known once the task runs)"},
        "stage": {"type": "string", "minLength": 1},
        "shard": {"type": "integer", "minimum": 0},
        "specSha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "model": {
            "type": "object",
            "required": ["engine", "name"],
            "properties": {
                "engine": {"type": "string"},
                "name": {"type": "string"},
                "file": {"type": "string"},
                "revision": {"type": "string", "description": "the model file's sha256 (llama.cpp), the Hub "
                                                              "commit (vLLM); absent for a remote server"},
                "baseUrl": {"type": "string"},
            },
        },
        "code": {
            "type": "object",
            "required": ["package", "version"],
            "properties": {"package": {"const": "synthcorpus"}, "version": {"type": "string"},
                           "gitCommit": {"type": "string"}},
        },
        "committed": {"type": "boolean", "description": "the stage's marker is committed"},
        "resumed": {"type": "boolean", "description": "the task found the stage committed and skipped it"},
    },
}


@attr.define
class SynthcorpusRunFacet(RunFacet):
    """The run facet of a synthcorpus stage task (schema: :data:`RUN_FACET_SCHEMA`)."""

    corpus: str
    stage: str
    specSha256: str  # noqa: N815 - OpenLineage fields are camelCase
    model: dict[str, Any]
    code: dict[str, Any]
    runId: str | None = attr.field(default=None)  # noqa: N815
    shard: int | None = attr.field(default=None)
    committed: bool | None = attr.field(default=None)
    resumed: bool | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return RUN_FACET_SCHEMA_URL


@dataclass
class StageLineage:
    """What the extractor returns to the provider (its ``OperatorLineage``, without the Airflow types)."""

    inputs: list[InputDataset] = field(default_factory=list)
    outputs: list[OutputDataset] = field(default_factory=list)
    run_facets: dict[str, RunFacet] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- naming


def dataset_id(uri: str) -> tuple[str, str]:
    """(namespace, name) of a stored file or folder, per the OpenLineage naming spec."""
    parsed = urlparse(uri)
    if not parsed.scheme:  # a plain local path
        return "file", uri.rstrip("/") or "/"
    if parsed.scheme == "file":
        path = unquote(parsed.path).rstrip("/") or "/"
        return ("file", path) if parsed.netloc in ("", "localhost") else (f"file://{parsed.netloc}", path)
    scheme = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(parsed.scheme, parsed.scheme)
    return f"{scheme}://{parsed.netloc}", parsed.path.strip("/")


def stage_uri(layout: RunLayout, stage: str) -> str:
    """The URI a stage's dataset is named by: its folder in the run, the version for publish."""
    return layout.version_uri() if stage == VERSION_STAGE else layout.stage_dir(stage)


def input_dataset(layout: RunLayout, stage: str, input_facets: Mapping[str, Any] | None = None) -> InputDataset:
    namespace, name = dataset_id(stage_uri(layout, stage))
    return InputDataset(namespace=namespace, name=name, inputFacets=dict(input_facets or {}))


# --------------------------------------------------------------------------------------------- run facet


def model_block(generate_stats: Mapping[str, Any] | None, spec: Any) -> dict[str, Any]:
    """The model of the run: what a committed generate shard recorded (engine, name, file, revision), else
    what the spec configures (no revision until a shard has loaded it)."""
    info = (generate_stats or {}).get("model") or {}
    if info:
        out = {"engine": info.get("engine"), "name": info.get("model"), "file": info.get("model_file"),
               "revision": info.get("model_revision") or info.get("model_sha256"), "baseUrl": info.get("base_url")}
    else:
        out = {"engine": spec.generation.engine, "name": spec.generation.model}
    return {k: str(v) for k, v in out.items() if v is not None}


def code_block(code: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The code version (``lineage.code_version()``'s package, version and git commit when known)."""
    code = dict(code or {"package": "synthcorpus", "version": __version__})
    out = {"package": code.get("package") or "synthcorpus", "version": str(code.get("version") or __version__)}
    if code.get("git_commit"):
        out["gitCommit"] = str(code["git_commit"])
    return out


def run_facet(spec: Any, run_id: str | None, stage: str, shard: int | None, *, model: Mapping[str, Any],
              code: Mapping[str, Any], marker: Mapping[str, Any] | None = None) -> SynthcorpusRunFacet:
    return SynthcorpusRunFacet(
        corpus=spec.name, runId=run_id, stage=stage, shard=shard, specSha256=spec.spec_hash(), model=dict(model),
        code=dict(code), committed=bool(marker) if marker is not None else None,
        resumed=bool(marker.get("skipped")) if marker else None,
    )


# --------------------------------------------------------------------------------------------- outputs


def output_files(stage: str, marker: Mapping[str, Any]) -> list[str]:
    """The files of a stage's committed result, as its marker lists them (folders left out; plan_shards
    lists its work units, whose ``input`` is the plan shard)."""
    out: list[str] = []
    for key, value in (marker.get("outputs") or {}).items():
        if (stage, key) in FOLDER_OUTPUTS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, Mapping) and isinstance(item.get("input"), str):
                out.append(item["input"])
    return list(dict.fromkeys(out))


@dataclass
class Measured:
    rows: int | None
    size: int | None
    files: int


def measure(uris: Sequence[str], budget_s: float = MEASURE_BUDGET_S) -> Measured:
    """Rows (Parquet footers), bytes and count of files, measured concurrently; rows and bytes are None
    when a file could not be measured within the budget (or at all)."""
    if not uris:
        return Measured(rows=None, size=0, files=0)

    def one(uri: str) -> tuple[int | None, int | None]:
        size = storage.size(uri)
        rows = storage.parquet_rows(uri) if uri.endswith(".parquet") and size is not None else None
        return rows, size

    pool = ThreadPoolExecutor(max_workers=min(MEASURE_THREADS, len(uris)), thread_name_prefix="ol-measure")
    try:
        futures = [pool.submit(one, u) for u in uris]
        done, pending = wait(futures, timeout=budget_s)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if pending:
        log.warning("OpenLineage: %d of %d output files not measured within %.0fs: no output statistics",
                    len(pending), len(uris), budget_s)
        return Measured(rows=None, size=None, files=len(uris))
    results = []
    for f in futures:
        try:
            results.append(f.result())
        except Exception as exc:  # noqa: BLE001 - a file that cannot be read leaves the statistics out
            log.warning("OpenLineage: an output file could not be measured (%s): no output statistics", exc)
            return Measured(rows=None, size=None, files=len(uris))
    sizes = [s for _, s in results]
    parquet = [r for (r, _), u in zip(results, uris) if u.endswith(".parquet")]
    return Measured(rows=sum(r or 0 for r in parquet) if parquet and None not in parquet else None,
                    size=sum(sizes) if None not in sizes else None, files=len(uris))


def output_statistics(measured: Measured) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet:
    return output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=measured.rows, size=measured.size, fileCount=measured.files)


def _field(name: str, type_: str, description: str | None = None) -> schema_dataset.SchemaDatasetFacetFields:
    return schema_dataset.SchemaDatasetFacetFields(name=name, type=type_, description=description)


def parquet_schema_facet(uri: str) -> schema_dataset.SchemaDatasetFacet:
    """Columns and Arrow types of a Parquet file, from its footer."""
    schema = storage.parquet_schema(uri)
    return schema_dataset.SchemaDatasetFacet(fields=[_field(f.name, str(f.type)) for f in schema])


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "string")


def mapping_schema_facet(obj: Mapping[str, Any], description: str | None = None) -> schema_dataset.SchemaDatasetFacet:
    """The top-level keys of a JSON object and their JSON types (a JSON output, or a marker's stats)."""
    return schema_dataset.SchemaDatasetFacet(fields=[_field(str(k), json_type(v), description) for k, v in obj.items()])


def schema_facet(files: Sequence[str], marker: Mapping[str, Any]) -> schema_dataset.SchemaDatasetFacet | None:
    """The schema of a stage's result: its first Parquet output's columns; else its first JSON output's
    top-level keys (small files only); else its marker's stats (a stage whose result is its marker)."""
    parquet = [u for u in files if u.endswith(".parquet")]
    if parquet:
        return parquet_schema_facet(parquet[0])
    for uri in (u for u in files if u.endswith(".json")):
        size = storage.size(uri)
        if size is not None and size <= MAX_JSON_SCHEMA_BYTES:
            data = storage.read_json(uri)
            if isinstance(data, Mapping):
                return mapping_schema_facet(data)
    stats = marker.get("stats")
    if isinstance(stats, Mapping) and stats:
        return mapping_schema_facet(stats, "in the stage's commit marker")
    return None


def stage_output(layout: RunLayout, stage: str, marker: Mapping[str, Any]) -> OutputDataset:
    """The dataset a committed stage (or shard) wrote, with its schema and output statistics."""
    namespace, name = dataset_id(stage_uri(layout, stage))
    files = output_files(stage, marker)
    facets: dict[str, Any] = {}
    schema = schema_facet(files, marker)
    if schema is not None:
        facets["schema"] = schema
    if not files:  # the stage's result is its marker (summary)
        files = [layout.marker(stage, marker.get("shard"))]
    return OutputDataset(namespace=namespace, name=name, facets=facets,
                         outputFacets={"outputStatistics": output_statistics(measure(files))})


def version_output(layout: RunLayout, manifest: Mapping[str, Any]) -> OutputDataset:
    """The published version: schema from its manifest, a version facet, and the statistics of the files
    this run wrote (a refresh references the earlier versions' files; those are not written again)."""
    namespace, name = dataset_id(layout.version_uri())
    version = str(manifest.get("version") or layout.version)
    written = [f for f in manifest.get("files", []) if (f.get("version") or version) == version]
    facets: dict[str, Any] = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)}
    if manifest.get("schema"):
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[_field(str(k), str(v)) for k, v in manifest["schema"].items()])
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=int(manifest.get("new_rows", sum(int(f.get("rows") or 0) for f in written))),
        size=sum(int(f.get("bytes") or 0) for f in written), fileCount=len(written))
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets={"outputStatistics": stats})


# --------------------------------------------------------------------------------------------- the gate


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def quality_metrics(report: Mapping[str, Any]) -> data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet:
    """The gate's run metrics as a data-quality metrics facet of the validated documents: rows and files,
    the word count quantiles as ``n_words`` quantiles, every other numeric run metric as a column metric
    of that name (``count`` = its value; the run metrics are one row)."""
    metrics = report.get("metrics") or {}
    columns: dict[str, data_quality_metrics_input_dataset.ColumnMetrics] = {}
    quantiles = {}
    for key, value in metrics.items():
        number = _number(value)
        if number is None:
            continue
        if key.startswith("n_words_p") and key[len("n_words_p"):].isdigit():
            quantiles[str(int(key[len("n_words_p"):]) / 100)] = number
        else:
            columns[key] = data_quality_metrics_input_dataset.ColumnMetrics(count=number)
    if quantiles:
        columns["n_words"] = data_quality_metrics_input_dataset.ColumnMetrics(
            quantiles=dict(sorted(quantiles.items(), key=lambda kv: float(kv[0]))),
            min=min(quantiles.values()), max=max(quantiles.values()))
    rows = metrics.get("documents")
    return data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        columnMetrics=columns, rowCount=int(rows) if _number(rows) is not None else None,
        fileCount=len(report.get("documents") or []) or None)


def _text(value: Any, limit: int = ACTUAL_CHARS) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quality_assertions(report: Mapping[str, Any]) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    """One assertion per expectation of the gate report (the documents expectations merged over the
    shards, then the run metrics'), with its success; a failed gate blocks the release (severity error)
    unless it was overridden (then warn)."""
    severity = "warn" if report.get("override") else "error"
    assertions = []
    for e in report.get("expectations") or []:
        column = e.get("column")
        assertions.append(data_quality_assertions_dataset.Assertion(
            assertion=str(e["expectation"]), success=bool(e["success"]),
            column=str(column) if column else None, severity=severity,
            name=f"{e.get('batch')}:{e['expectation']}" + (f":{column}" if column else ""),
            expected=_text(e.get("expected")), actual=_text(e.get("observed")),
            params={"batch": e.get("batch"), "check": e.get("check")}))
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions)


def gate_input_facets(report: Mapping[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {}
    return {"dataQualityMetrics": quality_metrics(report), "dataQualityAssertions": quality_assertions(report)}


# --------------------------------------------------------------------------------------------- one task


def stage_lineage(layout: RunLayout, stage: str, reads: Iterable[str], marker: Mapping[str, Any] | None, *,
                  facet: SynthcorpusRunFacet, gate_report: Mapping[str, Any] | None = None,
                  manifest: Mapping[str, Any] | None = None) -> StageLineage:
    """The lineage of one stage task: the datasets of the stages it reads, the dataset it wrote (when its
    marker is committed: a failed task wrote nothing that counts), and the run facet.

    ``gate_report``: the gate's report (quality_gate only; also when the gate failed and committed nothing);
    ``manifest``: the version's manifest (publish only)."""
    inputs = [input_dataset(layout, up, gate_input_facets(gate_report) if stage == GATE_STAGE and up == GATED_STAGE
                            else None) for up in dict.fromkeys(reads)]
    outputs: list[OutputDataset] = []
    if stage == VERSION_STAGE:
        if manifest:
            outputs.append(version_output(layout, manifest))
    elif marker:
        outputs.append(stage_output(layout, stage, marker))
    return StageLineage(inputs=inputs, outputs=outputs, run_facets={RUN_FACET_KEY: facet})
