"""The stage contract holds for every stage: a module per DAG task named like its storage folder, reads
only from stages that ran before it, one marker per stage or shard, and no path spelled outside the
run layout."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from synthcorpus import storage
from synthcorpus.layout import MARKER_SUFFIX, STAGE_MARKER
from synthcorpus.stages import SHARDS_FROM, STAGES, TABLE
from synthcorpus.stages import contract
from synthcorpus.stages.contract import RunContext, execute, results
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.spec import load_spec
from tests.conftest import ROOT, tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

STAGES_DIR = ROOT / "src" / "synthcorpus" / "stages"
# approval: what the release-approval task (an Airflow HITL operator, not a row of the table) stores; publish checks it
HELPERS = {"__init__", "contract", "runner", "approval", "preflight"}  # not stages: no task, no marker


def test_one_module_per_stage_named_like_its_task():
    modules = {p.stem for p in STAGES_DIR.glob("*.py")} - HELPERS
    assert modules == set(STAGES)
    for stage in TABLE:
        assert stage.module.__name__ == f"synthcorpus.stages.{stage.name}"
        assert callable(stage.run) and isinstance(stage.mapped, bool)


def _ancestors(name: str) -> set[str]:
    out: set[str] = set()
    todo = list(STAGES[name].upstream)
    while todo:
        parent = todo.pop()
        if parent not in out:
            out.add(parent)
            todo.extend(STAGES[parent].upstream)
    return out


def test_every_stage_reads_only_from_stages_that_ran_before_it():
    order = [s.name for s in TABLE]
    for i, stage in enumerate(TABLE):
        assert set(stage.upstream) <= set(order[:i]), stage.name
        assert set(stage.reads) <= _ancestors(stage.name), f"{stage.name} reads {stage.reads}"
        if stage.mapped:  # mapped stages expand over the shards the plan defines
            assert SHARDS_FROM in _ancestors(stage.name), stage.name


def test_a_run_has_one_folder_per_stage_and_one_marker_per_stage_or_shard(tmp_path, storage_uri):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=9)))
    run_pipeline(spec_path, "r1", engine=FakeEngine())
    run = RunContext.create(load_spec(spec_path), "r1")
    root = Path(run.layout.run_uri.removeprefix("file://"))
    folders = {p.name for p in root.iterdir() if p.is_dir()}
    # One folder per stage and no other but the run's budget totals (summary's holds nothing but its marker).
    assert folders == set(STAGES) | {Path(run.layout.budget_dir).name}
    n_shards = len(results(run, "plan_shards")[0]["shards"])
    assert n_shards == 3
    for stage in TABLE:
        markers = results(run, stage.name)
        assert len(markers) == (n_shards if stage.mapped else 1), stage.name
        assert all(m["stage"] == stage.name for m in markers)
        assert [m["shard"] for m in markers] == (list(range(n_shards)) if stage.mapped else [None])
    # No checkpoint parts survive a committed shard.
    assert not list(root.glob("generate/*.parts"))
    names = {p.name for p in root.rglob(f"*{MARKER_SUFFIX}")}
    assert STAGE_MARKER in names and "shard-00000" + MARKER_SUFFIX in names


def test_stages_read_only_the_markers_of_the_stages_they_declare(tmp_path, storage_uri, monkeypatch):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6)))
    layout = RunContext.create(load_spec(spec_path), "r1").layout
    running: list[str] = []
    reads: set[tuple[str, str]] = set()
    read_marker = contract.read_marker

    def spy(uri):
        owner = next(s for s in STAGES if uri.startswith(layout.stage_dir(s) + "/"))
        if running and owner != running[-1]:
            reads.add((running[-1], owner))
        return read_marker(uri)

    monkeypatch.setattr(contract, "read_marker", spy)
    for stage in TABLE:
        def run(run, shard, _run=stage.module.run, _name=stage.name):
            running.append(_name)
            try:
                return _run(run, shard)
            finally:
                running.pop()
        monkeypatch.setattr(stage.module, "run", run)
    run_pipeline(spec_path, "r1", engine=FakeEngine())
    # generate reads its work unit (plan_shards data) by layout, not through a marker.
    assert {stage for stage, _ in reads} >= {"topics", "prompts", "plan_shards", "filter_shard", "dedup",
                                            "near_dedup", "decontaminate", "quality_gate", "publish"}
    for stage, read in sorted(reads):
        if read == SHARDS_FROM:  # the run's shard list (contract.shards): any stage after the plan may read it
            assert SHARDS_FROM in _ancestors(stage), stage
            continue
        assert read in STAGES[stage].reads, f"{stage} reads {read}'s marker but does not declare it"


def test_rerunning_a_committed_run_is_a_no_op(tmp_path, storage_uri):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6)))
    engine = FakeEngine()
    first = run_pipeline(spec_path, "r1", engine=engine)
    calls = len(engine.calls)
    again = run_pipeline(spec_path, "r1", engine=engine)
    assert len(engine.calls) == calls
    for stage in TABLE:
        markers = again[stage.name] if stage.mapped else [again[stage.name]]
        assert all(m.get("skipped") for m in markers), stage.name
        before = first[stage.name] if stage.mapped else [first[stage.name]]
        assert [m["stats"] for m in markers] == [m["stats"] for m in before], stage.name


# Storage path pieces that only the run layout may spell (checked in string literals, docstrings aside).
PATH_LITERALS = re.compile(r"(^|[-/])(shard|part)-|^(removed[-/.]|_stage\.)|^(latest|manifest|lineage|spec)\.json$|\.commit\.json$"
                           r"|^/?(runs|versions|quarantine|plan|filter|decontam)/?$")


def _literals(tree: ast.AST):
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_no_module_but_the_layout_spells_a_storage_path():
    offenders = []
    for path in sorted([*(ROOT / "src" / "synthcorpus").rglob("*.py"), *(ROOT / "dags").glob("*.py")]):
        if path.name == "layout.py":
            continue
        for node in _literals(ast.parse(path.read_text())):
            if PATH_LITERALS.search(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_the_architecture_map_lists_every_stage_in_table_order():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|\s*(yes)?\s*\| ([^|]*) \|", (ROOT / "docs" / "architecture.md").read_text(), re.M)
    assert [name for _, name, _, _ in rows] == [s.name for s in TABLE]
    for (_, name, mapped, after), stage in zip(rows, TABLE):
        assert bool(mapped) == stage.mapped, name
        assert [a.strip() for a in after.split(",") if a.strip() not in ("", "—")] == list(stage.upstream), name


def test_a_marker_whose_outputs_are_gone_is_not_a_commit(tmp_path, storage_uri):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6)))
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine, until="generate")
    run = RunContext.create(load_spec(spec_path), "r1", engine=engine)
    calls = len(engine.calls)
    storage.delete(run.layout.shard("generate", 1))  # the shard's data lost, its marker kept
    redone = execute(run, "generate", 1)
    assert "skipped" not in redone and storage.exists(run.layout.shard("generate", 1))
    assert len(engine.calls) == calls + redone["stats"]["rows"]
    assert execute(run, "generate", 1)["skipped"] and execute(run, "generate", 0)["skipped"]
