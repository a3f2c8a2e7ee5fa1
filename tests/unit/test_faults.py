"""Fault points (synthcorpus.faults): off unless configured; a configured fault fires once, for its run only,
at its point: a stage's work stored and its marker not written, so the retry that follows redoes the stage."""

from __future__ import annotations

import json

import pytest

from synthcorpus import faults, storage
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext, read_marker
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine


def test_no_faults_file_no_fault(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("publish:after_data", "r1")  # nothing happens


def test_a_fault_fires_once_for_its_run_at_its_point_and_the_retry_completes(tmp_path, storage_uri, monkeypatch):
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": [
        {"point": "topics:before_commit", "run": "r1", "action": "raise"},
        {"point": "publish:after_manifest", "run": "r1", "action": "raise"},
        {"point": "seeds:before_commit", "run": "someone-else", "action": "raise"},
    ]}))
    monkeypatch.setenv(faults.ENV, str(path))
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=3)))
    run = RunContext.create(load_spec(spec_path), "r1")
    with pytest.raises(faults.InjectedFault, match="topics:before_commit"):
        run_pipeline(spec_path, "r1", engine=FakeEngine(), until="publish")
    assert read_marker(run.layout.marker("seeds")) is not None  # the stage before committed
    assert read_marker(run.layout.marker("topics")) is None  # its work stored, its marker not written
    with pytest.raises(faults.InjectedFault, match="publish:after_manifest"):
        run_pipeline(spec_path, "r1", engine=FakeEngine(), until="publish")
    assert storage.exists(run.layout.manifest) and not storage.exists(run.layout.latest)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="publish")  # each fault fired once: this one completes
    assert storage.read_json(run.layout.latest)["version"] == "r1"
    assert [(f["index"], f["point"], f["run"]) for f in faults.fired(str(path))] == [
        (0, "topics:before_commit", "r1"), (1, "publish:after_manifest", "r1")]


def test_a_pause_waits_for_its_release_then_goes_on_once(tmp_path, monkeypatch):
    """action "pause": the process waits at the point until the test releases it (the test acts on the world
    meanwhile), then goes on; a later pass does not pause again; an unreleased pause fails after timeout_s."""
    import threading

    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": [
        {"point": "publish:after_data", "run": "r1", "action": "pause"},
        {"point": "publish:after_manifest", "run": "r1", "action": "pause", "timeout_s": 0.2},
    ]}))
    monkeypatch.setenv(faults.ENV, str(path))
    passed = threading.Event()

    def reach():
        faults.point("publish:after_data", "r1")
        passed.set()

    t = threading.Thread(target=reach, daemon=True)
    t.start()
    fired = lambda: faults.fired(str(path))  # noqa: E731
    from tests.airflow_api import wait_until

    wait_until("the pause to fire", lambda: fired(), 30, 0.01)
    assert not passed.wait(0.3)  # still paused: nothing released it
    faults.release(str(path), 0)
    assert passed.wait(30)
    t.join(30)
    faults.point("publish:after_data", "r1")  # fired once: no second pause
    with pytest.raises(faults.InjectedFault, match="not released within 0.2 s"):
        faults.point("publish:after_manifest", "r1")
    assert [f["point"] for f in fired()] == ["publish:after_data", "publish:after_manifest"]
