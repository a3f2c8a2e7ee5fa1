"""OpenLineage: the stage extractor (synthcorpus.openlineage_extractor) over a pipeline run in-process, the
facets it builds (synthcorpus.openlineage_facets), their validation against the schemas available offline,
and the HTTP transport against a Marquez-shaped receiver on loopback. The same validation and graph
checks run on the events of a real `airflow dags test` in tests/e2e/test_airflow_dags_test.py.

Schemas: openlineage-python 1.54.0 ships no JSON schemas (no OpenLineage.json, no standard facet schema);
the Airflow provider ships its five Airflow facet schemas and openlineage-integration-common a few
integration facet schemas. So each facet is checked by its ``_schemaURL``: against the shipped JSON schema
when there is one (jsonschema, draft 2020-12), our own run facet against ``RUN_FACET_SCHEMA``, and every
other facet -- and the event envelope -- against the client class that declares that ``_schemaURL`` (the
classes are generated from the spec's schemas: required fields, field names and types).
"""

from __future__ import annotations

import json
import logging
import threading
import types
import typing
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attr
import pytest

from synthcorpus import openlineage_facets as olf
from synthcorpus.spec import load_spec
from synthcorpus.stages import STAGES, TABLE
from synthcorpus.stages.contract import RunContext
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

# The chain a published document went through: each stage's dataset is read by the next one's task.
CHAIN = ("seeds", "topics", "prompts", "plan_shards", "generate", "filter_shard", "judge", "dedup", "minhash_signatures",
         "near_dedup", "decontaminate", "top_up", "validate_shard", "quality_gate", "publish")


# --------------------------------------------------------------------------------------------- validation


# What the provider emits that its own shipped schema rejects, found by these tests (apache-airflow-providers-
# openlineage 2.20.3 on Airflow 3.3.2, `airflow` run facet vs its AirflowRunFacet.json): taskInstance has no
# `pool` (required there), and task.retry_exponential_backoff is a number (0), typed boolean there -- the
# same kind of drift as OpenLineage/OpenLineage#3203 (`duration`). Not ours to fix; anything else fails.
KNOWN_PROVIDER_DEVIATIONS = {
    ("airflow", "taskInstance", "'pool' is a required property"),
    ("airflow", "task.retry_exponential_backoff", "0 is not of type 'boolean'"),
}


def offline_schemas() -> dict[str, dict]:
    """Every OpenLineage facet JSON schema installed, by the URL its facets name in ``_schemaURL`` (before
    the ``#``), plus our run facet's."""
    import airflow.providers.openlineage as provider
    import openlineage.common as common

    found: dict[str, dict] = {olf.RUN_FACET_SCHEMA_URL: olf.RUN_FACET_SCHEMA}
    for root in (Path(provider.__file__).parent / "facets", Path(common.__file__).parent):
        for path in sorted(root.rglob("*.json")):
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and "$defs" in doc:
                found[doc.get("$id") or f"file:{path.parent.name}/{path.name}"] = doc
    return found


def facet_classes() -> dict[str, type]:
    """The client's facet (and event part) classes by the ``_schemaURL`` they declare."""
    import importlib
    import pkgutil

    import openlineage.client.generated as generated

    out: dict[str, type] = {}
    for info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and attr.has(obj) and "_get_schema" in vars(obj):
                out.setdefault(obj._get_schema(), obj)
    return out


def _type_problems(value: Any, hint: Any, where: str) -> list[str]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return []
        tries = [_type_problems(value, h, where) for h in options if h is not type(None)]
        return [] if any(not t for t in tries) else tries[0]
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        (item,) = typing.get_args(hint) or (Any,)
        return [p for i, v in enumerate(value) for p in _type_problems(v, item, f"{where}[{i}]")]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        _, item = typing.get_args(hint) or (str, Any)
        return [p for k, v in value.items() for p in _type_problems(v, item, f"{where}.{k}")]
    if isinstance(hint, type) and attr.has(hint):
        return structure_problems(value, hint, where)
    if isinstance(hint, type) and issubclass(hint, __import__("enum").Enum):
        return [] if value in {m.value for m in hint} else [f"{where}: {value!r} is not one of {[m.value for m in hint]}"]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        ok = True
    return [] if ok else [f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}"]


def _attr_types(cls: type) -> dict[str, Any]:
    """Each attrs field's type, its string annotation evaluated in the module of the class declaring it."""
    import sys

    out = {}
    for a in attr.fields(cls):
        owner = next((c for c in cls.__mro__ if a.name in getattr(c, "__annotations__", {})), cls)
        hint = a.type
        if isinstance(hint, str):
            scope = {**vars(typing), **vars(sys.modules[owner.__module__])}
            try:
                hint = eval(hint, scope)  # noqa: S307 - the client's own annotations
            except Exception:  # noqa: BLE001 - an annotation we cannot evaluate: not type-checked
                hint = Any
        out[a.name] = hint
    return out


def structure_problems(obj: Any, cls: type, where: str = "") -> list[str]:
    """What in a JSON object does not fit the client class generated from its schema: missing required
    fields and fields of the wrong type (keys it does not declare are allowed: facets are open)."""
    if not isinstance(obj, dict):
        return [f"{where}: expected an object for {cls.__name__}"]
    hints = _attr_types(cls)
    problems = []
    for a in attr.fields(cls):
        key = a.name if not a.name.startswith("_") or a.name in ("_producer", "_schemaURL", "_deleted") else a.alias
        if key not in obj:
            if a.default is attr.NOTHING and a.init:
                problems.append(f"{where}.{key}: required by {cls.__name__}")
            continue
        problems += _type_problems(obj[key], hints.get(a.name, Any), f"{where}.{key}")
    return problems


class EventValidator:
    """Validates RunEvents as the module docstring says; ``checked`` counts facets by how they were checked."""

    def __init__(self):
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.schemas = offline_schemas()
        self.classes = facet_classes()
        # The shipped facet schemas $ref the core spec's BaseFacet kinds, which no installed package ships:
        # resolved to the envelope every facet must have (_producer and _schemaURL, both URIs), as the
        # client's BaseFacet declares it.
        base = {"type": "object", "required": ["_producer", "_schemaURL"],
                "properties": {"_producer": {"type": "string", "format": "uri"},
                               "_schemaURL": {"type": "string", "format": "uri"}}}
        core = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": {k: base for k in ("BaseFacet", "RunFacet", "JobFacet", "DatasetFacet", "InputDatasetFacet",
                                            "OutputDatasetFacet")}}
        # (some shipped schemas name the draft-04 era dialect "http://json-schema.org/schema#": read as 2020-12,
        # which every shipped OpenLineage schema is written in)
        resources = [(uri, Resource.from_contents(doc, default_specification=DRAFT202012)) for uri, doc in self.schemas.items()
                     if doc.get("$schema", "").startswith("https://json-schema.org/draft/2020-12")] + [
                    (uri, DRAFT202012.create_resource(doc)) for uri, doc in self.schemas.items()
                    if not doc.get("$schema", "").startswith("https://json-schema.org/draft/2020-12")]
        for version in ("1-0-2", "1-0-5", "2-0-2"):
            resources.append((f"https://openlineage.io/spec/{version}/OpenLineage.json", DRAFT202012.create_resource(core)))
        self.registry = Registry().with_resources(resources)
        self.validator_class = Draft202012Validator
        self.checked: dict[str, int] = defaultdict(int)

    def facet_problems(self, key: str, facet: Any, where: str) -> list[str]:
        from jsonschema.exceptions import ValidationError

        if not isinstance(facet, dict) or not isinstance(facet.get("_schemaURL"), str):
            return [f"{where}: facet {key} has no _schemaURL"]
        url = facet["_schemaURL"]
        doc_url, _, pointer = url.partition("#")
        if doc_url in self.schemas:  # a shipped JSON schema (or ours)
            schema = {"$ref": url} if pointer else {"$ref": doc_url}
            try:
                self.validator_class(schema, registry=self.registry,
                                     format_checker=self.validator_class.FORMAT_CHECKER).validate(facet)
            except ValidationError as exc:
                return [f"{where}: facet {key} against {url}: {exc.message}"]
            self.checked["json-schema"] += 1
            return []
        kind = pointer.rsplit("/", 1)[-1]  # e.g. RunFacet: a facet class that declares only its base kind
        shipped = [d for name, d in self.schemas.items() if key in d.get("properties", {}) and kind in name]
        if doc_url.endswith("/OpenLineage.json") and shipped:
            # The provider's Airflow facet classes declare the core RunFacet/JobFacet URL; their own schemas
            # are shipped (AirflowRunFacet.json, ...): validated by the key they are emitted under.
            validator = self.validator_class(shipped[0], registry=self.registry,
                                             format_checker=self.validator_class.FORMAT_CHECKER)
            errors = [(".".join(map(str, list(e.absolute_path)[1:])), e.message) for e in validator.iter_errors({key: facet})]
            self.checked["known-deviation"] += sum((key, *e) in KNOWN_PROVIDER_DEVIATIONS for e in errors)
            errors = [f"{path}: {m}" for path, m in errors if (key, path, m) not in KNOWN_PROVIDER_DEVIATIONS]
            if errors:
                return [f"{where}: facet {key} against the shipped {key} schema: {m}" for m in errors]
            self.checked["json-schema"] += 1
            return []
        cls = self.classes.get(url)
        if cls is None:
            return [f"{where}: facet {key}: no schema or client class for {url}"]
        self.checked["client-class"] += 1
        return structure_problems(facet, cls, f"{where}.{key}")

    def problems(self, event: dict) -> list[str]:
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent

        where = f"{event.get('eventType')} {event.get('job', {}).get('name')}"
        out = structure_problems(event, RunEvent, where)
        if event.get("schemaURL") != RunEvent._get_schema():
            out.append(f"{where}: schemaURL {event.get('schemaURL')!r}, expected {RunEvent._get_schema()}")
        out += structure_problems(event.get("run"), Run, f"{where}.run")
        out += structure_problems(event.get("job"), Job, f"{where}.job")
        import uuid

        try:
            uuid.UUID(event["run"]["runId"])
        except (KeyError, ValueError, TypeError):
            out.append(f"{where}: run.runId is not a UUID")
        for key, facet in (event.get("run", {}).get("facets") or {}).items():
            out += self.facet_problems(key, facet, f"{where}.run")
        for key, facet in (event.get("job", {}).get("facets") or {}).items():
            out += self.facet_problems(key, facet, f"{where}.job")
        for kind, cls, extra in (("inputs", InputDataset, "inputFacets"), ("outputs", OutputDataset, "outputFacets")):
            for i, ds in enumerate(event.get(kind) or []):
                out += structure_problems({k: v for k, v in ds.items() if k not in ("facets", extra)}, cls, f"{where}.{kind}[{i}]")
                for group in ("facets", extra):
                    for key, facet in (ds.get(group) or {}).items():
                        out += self.facet_problems(key, facet, f"{where}.{kind}[{i}].{group}")
        return out


def lineage_graph(events: list[dict]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """dataset -> the datasets written by the jobs that read it (COMPLETE events only)."""
    graph: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for e in events:
        if e["eventType"] != "COMPLETE":
            continue
        for i in e.get("inputs") or []:
            for o in e.get("outputs") or []:
                graph[(i["namespace"], i["name"])].add((o["namespace"], o["name"]))
    return graph


def reachable(graph, start) -> set:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in graph.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# --------------------------------------------------------------------------------------------- a receiver


class LineageReceiver:
    """A Marquez-shaped endpoint on loopback: ``POST /api/v1/lineage`` with one JSON RunEvent answers 201
    (Marquez's answer); anything else 404, a body that is not a RunEvent 400 (never stored)."""

    PATH = "/api/v1/lineage"

    def __init__(self):
        receiver = self
        self.events: list[dict] = []
        self.rejected: list[tuple[str, int]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 201
                if self.path != receiver.PATH:
                    status = 404
                elif not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    status = 415
                else:
                    try:
                        event = json.loads(body)
                        ok = isinstance(event, dict) and {"eventType", "eventTime", "run", "job", "producer"} <= set(event)
                    except ValueError:
                        ok = False
                    if ok:
                        receiver.events.append(event)
                    else:
                        status = 400
                if status != 201:
                    receiver.rejected.append((self.path, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = LineageReceiver()
    yield r
    r.close()


# --------------------------------------------------------------------------------------------- the extractor


def stage_task(spec_path: str, stage: str, shard: int | None = None, *, positional: bool = False):
    """What the DAG factory builds for a stage, as the extractor sees it: a _PythonDecoratedOperator of
    ``_execute`` (unmapped: positional arguments, as ``task(_execute)(spec_path, stage)``; mapped: keywords)."""
    def _execute(spec_path: str, stage: str, shard: int | None = None):
        raise AssertionError("the extractor must not run the task")

    kwargs = {"spec_path": spec_path, "stage": stage} if shard is None and not positional else {}
    if shard is not None:
        kwargs = {"spec_path": spec_path, "stage": stage, "shard": shard}
    args = [spec_path, stage] if positional else []
    return types.SimpleNamespace(task_id=stage, task_type="_PythonDecoratedOperator", python_callable=_execute,
                                 op_args=args, op_kwargs=kwargs, params={})


class TaskInstance:
    def __init__(self, run_id="manual__2026-12-02T00:00:00+00:00", map_index=-1, params=None):
        self.run_id, self.map_index, self._params = run_id, map_index, params or {}

    def get_template_context(self):
        return {"params": self._params}


def extract(task, ti=None, *, failed=False):
    from synthcorpus.openlineage_extractor import SynthcorpusStageExtractor

    extractor = SynthcorpusStageExtractor(task)
    ti = ti or TaskInstance()
    return extractor.extract_on_failure(ti) if failed else extractor.extract_on_complete(ti)


def as_event(lineage, stage: str, event_type="COMPLETE") -> dict:
    """The lineage as the provider puts it into an event (serialized by the client's Serde)."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde
    from openlineage.client.uuid import generate_new_uuid

    event = RunEvent(eventType=RunState(event_type), eventTime="2026-12-02T00:00:00+00:00",
                     run=Run(runId=str(generate_new_uuid()), facets=lineage.run_facets),
                     job=Job(namespace="synthcorpus", name=f"synthcorpus_tiny.{stage}"),
                     inputs=lineage.inputs, outputs=lineage.outputs, producer="https://example.invalid/test")
    return json.loads(Serde.to_json(event))


@pytest.fixture
def published(tmp_path, storage_uri):
    """A tiny corpus run through every stage in-process (fake engine): (spec path, run context)."""
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6, **{"generation.shard_size": 2})))
    run_pipeline(spec_path, "r1", engine=FakeEngine())
    return spec_path, RunContext.create(load_spec(spec_path), "r1")


def all_task_events(spec_path: str, run: RunContext) -> list[dict]:
    from synthcorpus.stages.contract import shards

    ti = TaskInstance(params={"run_name": "r1"})
    events = []
    for stage in TABLE:
        indexes = shards(run, stage.name) if stage.mapped else [None]
        for i in indexes:
            events.append(as_event(extract(stage_task(spec_path, stage.name, i, positional=i is None), ti), stage.name))
    return events


def test_every_stage_task_carries_its_datasets_schema_and_statistics(published):
    spec_path, run = published
    events = all_task_events(spec_path, run)
    validator = EventValidator()
    assert [p for e in events for p in validator.problems(e)] == []
    assert validator.checked["json-schema"] >= len(events) and validator.checked["client-class"] > len(events)
    storage_root = run.layout.corpus_uri.removeprefix("file://")
    for e in events:
        stage = e["job"]["name"].split(".", 1)[1]
        # inputs: the datasets of the stages it reads, named by their folders in the run (the version for publish)
        assert [(i["namespace"], i["name"]) for i in e["inputs"]] == [
            ("file", f"{storage_root}/versions/r1" if up == "publish" else f"{storage_root}/runs/r1/{up}")
            for up in STAGES[stage].reads]
        (out,) = e["outputs"]
        assert out["namespace"] == "file"
        assert out["name"] == (f"{storage_root}/versions/r1" if stage == "publish" else f"{storage_root}/runs/r1/{stage}")
        assert out["facets"]["schema"]["fields"], stage
        stats = out["outputFacets"]["outputStatistics"]
        assert stats["fileCount"] >= 1 and stats["size"] > 0, stage
        facet = e["run"]["facets"]["synthcorpus"]
        assert facet["corpus"] == "tiny" and facet["runId"] == "r1" and facet["stage"] == stage
        assert facet["specSha256"] == run.spec.spec_hash() and facet["committed"] is True
        assert facet["code"]["version"] == __import__("synthcorpus").__version__
        assert facet["model"]["engine"] == "fake"  # what the generate shards recorded (FakeEngine)


def test_statistics_and_schemas_come_from_the_stored_files(published):
    import pyarrow.parquet as pq

    spec_path, run = published
    by_stage = {e["job"]["name"].split(".", 1)[1]: e for e in all_task_events(spec_path, run)}
    seeds = by_stage["seeds"]["outputs"][0]
    table = pq.read_table(run.layout.output("seeds", "seeds").removeprefix("file://"))
    assert seeds["outputFacets"]["outputStatistics"]["rowCount"] == table.num_rows > 0
    assert [f["name"] for f in seeds["facets"]["schema"]["fields"]] == table.column_names
    # top_up's dataset is the documents the gate validates (wherever they live): rows = documents requested
    assert by_stage["top_up"]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 6
    # the version: this run's data files, its manifest's schema, and the version facet
    version = by_stage["publish"]["outputs"][0]
    manifest = json.loads(Path(run.layout.manifest.removeprefix("file://")).read_text())
    assert version["facets"]["version"]["datasetVersion"] == "r1"
    assert version["outputFacets"]["outputStatistics"] == {
        **version["outputFacets"]["outputStatistics"], "rowCount": 6, "fileCount": len(manifest["files"]),
        "size": sum(f["bytes"] for f in manifest["files"])}
    assert {f["name"]: f["type"] for f in version["facets"]["schema"]["fields"]} == manifest["schema"]
    # history's result is JSON: its keys; summary's is its marker: the stats' keys
    assert {f["name"] for f in by_stage["history"]["outputs"][0]["facets"]["schema"]["fields"]} >= {"version", "rows", "segments"}
    assert [f["name"] for f in by_stage["summary"]["outputs"][0]["facets"]["schema"]["fields"]] == ["text"]


def test_gate_carries_quality_metrics_and_one_assertion_per_expectation(published):
    spec_path, run = published
    report = json.loads(Path(run.layout.output("quality_gate", "report").removeprefix("file://")).read_text())
    event = as_event(extract(stage_task(spec_path, "quality_gate"), TaskInstance(params={"run_name": "r1"})), "quality_gate")
    assert EventValidator().problems(event) == []
    (validated,) = [i for i in event["inputs"] if i["name"].endswith("/runs/r1/top_up")]
    assertions = validated["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) == len(report["expectations"]) > 5
    assert [(a["assertion"], a["success"], a.get("column")) for a in assertions] == [
        (e["expectation"], e["success"], e["column"] or None) for e in report["expectations"]]
    metrics = validated["inputFacets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == report["metrics"]["documents"] == 6
    assert metrics["columnMetrics"]["duplicate_rate"]["count"] == report["metrics"]["duplicate_rate"]
    assert metrics["columnMetrics"]["n_words"]["quantiles"]["0.5"] == report["metrics"]["n_words_p50"]
    # only the validated dataset carries them
    assert all("inputFacets" not in i or not i["inputFacets"] for i in event["inputs"] if i is not validated)


def test_a_failed_gate_reports_its_failed_assertions_and_no_output(tmp_path, storage_uri):
    from synthcorpus.quality.gate import GateFailed

    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=3, **{"quality.min_documents": 50}), "strict.yaml"))
    with pytest.raises(GateFailed):
        run_pipeline(spec_path, "f1", engine=FakeEngine())
    event = as_event(extract(stage_task(spec_path, "quality_gate"), TaskInstance(params={"run_name": "f1"}), failed=True),
                     "quality_gate", "FAIL")
    assert EventValidator().problems(event) == []
    assert event["outputs"] == []  # nothing committed
    (validated,) = [i for i in event["inputs"] if i["name"].endswith("/runs/f1/top_up")]
    failed = [a for a in validated["inputFacets"]["dataQualityAssertions"]["assertions"] if not a["success"]]
    assert [(a["assertion"], a["column"], a["severity"]) for a in failed] == [
        ("expect_column_values_to_be_between", "documents", "error")]
    assert event["run"]["facets"]["synthcorpus"]["committed"] is False


def test_mapped_shard_from_the_map_index_and_the_run_id_from_the_airflow_run(published, tmp_path):
    spec_path, run = published
    task = stage_task(spec_path, "generate", 0)
    task.op_kwargs.pop("shard")  # not expanded: the shard comes from the map index, as the plan lists them
    lineage = extract(task, TaskInstance(map_index=1, params={"run_name": "r1"}))
    facet = lineage.run_facets["synthcorpus"]
    assert facet.shard == 1 and facet.model["revision"] and lineage.outputs[0].outputFacets["outputStatistics"].rowCount == 2
    # no run_name: the Airflow run id (sanitized as the layout does) -- a run that does not exist has no outputs
    lineage = extract(stage_task(spec_path, "seeds"), TaskInstance(run_id="manual__2026-12-02T00:00:00+00:00"))
    assert lineage.run_facets["synthcorpus"].runId == "manual__2026-12-02T00-00-00-00-00"
    assert lineage.outputs == [] and lineage.inputs == []


def test_other_tasks_and_broken_inputs_never_break_anything(published, caplog, capsys):
    spec_path, run = published

    def pod_kwargs(shard_list, params=None, run_id=None):
        return []

    foreign = types.SimpleNamespace(task_id="pod_kwargs", python_callable=pod_kwargs, op_args=[[0, 1]], op_kwargs={},
                                    params={})
    lineage = extract(foreign)
    assert (lineage.inputs, lineage.outputs, lineage.run_facets) == ([], [], {})
    unknown_stage = stage_task(spec_path, "no_such_stage")
    assert extract(unknown_stage).run_facets == {}
    caplog.set_level(logging.WARNING)
    broken = stage_task(str(Path(spec_path).with_name("missing.yaml")), "seeds")
    lineage = extract(broken, TaskInstance(params={"run_name": "r1"}))
    assert (lineage.inputs, lineage.outputs, lineage.run_facets) == ([], [], {})
    logged = caplog.text + "".join(capsys.readouterr())  # Airflow's LoggingMixin may log through structlog
    assert "synthcorpus OpenLineage: no lineage for seeds: SpecError" in logged
    from synthcorpus.openlineage_extractor import SynthcorpusStageExtractor

    start = SynthcorpusStageExtractor(stage_task(spec_path, "topics", positional=True)).extract()
    assert start.run_facets["synthcorpus"].specSha256 == run.spec.spec_hash() and not start.inputs


def test_dataset_names_follow_the_openlineage_naming_spec():
    from openlineage.client.naming.dataset import S3, LocalFileSystem

    assert olf.dataset_id("file:///data/corpora/tiny/runs/r1/seeds") == (
        LocalFileSystem(path="/data/corpora/tiny/runs/r1/seeds").get_namespace(), "/data/corpora/tiny/runs/r1/seeds")
    s3 = S3(bucket_name="bucket", object_key="corpora/tiny/runs/r1/seeds")
    assert olf.dataset_id("s3://bucket/corpora/tiny/runs/r1/seeds") == (s3.get_namespace(), s3.get_name())
    assert olf.dataset_id("file:///tmp/a%20b/c") == ("file", "/tmp/a b/c")
    assert olf.dataset_id("memory://store/tiny/versions/v1") == ("memory://store", "tiny/versions/v1")


def test_s3_storage_names_the_bucket_as_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", "s3://corpus-bucket/corpora")
    spec = load_spec(str(write_spec(tmp_path, tiny_spec_dict())))
    layout = RunContext.create(spec, "r1").layout
    ds = olf.input_dataset(layout, "generate")
    assert (ds.namespace, ds.name) == ("s3://corpus-bucket", "corpora/tiny/runs/r1/generate")
    ds = olf.input_dataset(layout, "publish")
    assert (ds.namespace, ds.name) == ("s3://corpus-bucket", "corpora/tiny/versions/r1")


def test_the_graph_links_seeds_to_the_published_version(published):
    spec_path, run = published
    events = all_task_events(spec_path, run)
    graph = lineage_graph(events)
    root = run.layout.corpus_uri.removeprefix("file://")
    node = {s: ("file", f"{root}/versions/r1" if s == "publish" else f"{root}/runs/r1/{s}") for s in CHAIN}
    for a, b in zip(CHAIN, CHAIN[1:]):
        assert node[b] in graph[node[a]], f"{a} -> {b}"
    assert node["publish"] in reachable(graph, node["seeds"])
    # and nothing flows backwards: no stage's dataset reaches an earlier stage's
    assert node["seeds"] not in reachable(graph, node["publish"])


def test_measuring_gives_up_rather_than_guessing(tmp_path, monkeypatch):
    from synthcorpus import storage

    files = []
    for i in range(3):
        p = tmp_path / f"f{i}.json"
        p.write_text("{}")
        files.append(p.as_uri())
    assert olf.measure(files) == olf.Measured(rows=None, size=6, files=3)
    real = storage.size
    monkeypatch.setattr(storage, "size", lambda uri: __import__("time").sleep(0.5) or real(uri))
    assert olf.measure(files, budget_s=0.1) == olf.Measured(rows=None, size=None, files=3)
    assert olf.measure([(tmp_path / "gone.json").as_uri()]).size is None


def test_http_transport_posts_run_events_the_way_marquez_accepts(published, receiver):
    """The client's HTTP transport (what [openlineage] transport {"type": "http"} builds) against the receiver."""
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport import get_default_factory

    spec_path, run = published
    transport = get_default_factory().create({"type": "http", "url": receiver.url, "endpoint": "api/v1/lineage"})
    client = OpenLineageClient(transport=transport)
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.uuid import generate_new_uuid

    lineage = extract(stage_task(spec_path, "quality_gate"), TaskInstance(params={"run_name": "r1"}))
    event = RunEvent(eventType=RunState.COMPLETE, eventTime="2026-12-02T00:00:00+00:00",
                     run=Run(runId=str(generate_new_uuid()), facets=lineage.run_facets),
                     job=Job(namespace="synthcorpus", name="synthcorpus_tiny.quality_gate"),
                     inputs=lineage.inputs, outputs=lineage.outputs, producer="https://example.invalid/test")
    client.emit(event)
    assert receiver.rejected == []
    (got,) = receiver.events
    assert got == as_event(lineage, "quality_gate") | {"run": got["run"], "eventTime": got["eventTime"]}
    assert EventValidator().problems(got) == []
    # a wrong endpoint is refused by the receiver, so the check above can fail
    bad = OpenLineageClient(transport=get_default_factory().create(
        {"type": "http", "url": receiver.url, "endpoint": "api/v2/lineage", "retry": {"total": 0}}))
    with pytest.raises(Exception):
        bad.emit(event)
    assert receiver.rejected == [("/api/v2/lineage", 404)]


def test_the_validator_reports_what_does_not_fit(published):
    spec_path, run = published
    event = as_event(extract(stage_task(spec_path, "quality_gate"), TaskInstance(params={"run_name": "r1"})), "quality_gate")
    validator = EventValidator()
    assert validator.problems(event) == []
    broken = json.loads(json.dumps(event))
    broken["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = "many"
    (gated,) = [i for i in broken["inputs"] if i["inputFacets"]]
    del gated["inputFacets"]["dataQualityAssertions"]["assertions"]
    broken["run"]["facets"]["synthcorpus"]["specSha256"] = "not-a-hash"
    broken["run"]["runId"] = "r1"
    problems = "\n".join(validator.problems(broken))
    assert "outputStatistics.rowCount: expected int, got 'many'" in problems
    assert "dataQualityAssertions.assertions: required by DataQualityAssertionsDatasetFacet" in problems
    assert "facet synthcorpus against urn:synthcorpus" in problems and "not-a-hash" in problems
    assert "run.runId is not a UUID" in problems
