"""Release approval (spec ``publish.approval``) in-process: the spec section, the request the person sees,
each decision recorded in decisions.json, lineage.json, the quarantine report and the card, and publish's
guard. The Airflow task itself (ReleaseApproval) is exercised under the real scheduler in
tests/integration/test_approval.py."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from synthcorpus import storage
from synthcorpus.observability import approval_metrics
from synthcorpus.spec import SpecError, load_spec
from synthcorpus.stages import approval
from synthcorpus.stages.contract import execute, open_run
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

RUN = "gov-1"
ALICE = {"id": "alice", "name": "Alice"}


def governed(tmp_path, **approval_cfg) -> str:
    cfg = {"required": True, "assigned_users": ["alice"], "timeout": "2h", **approval_cfg}
    return str(write_spec(tmp_path, tiny_spec_dict(name="gov", documents=6, **{"publish.approval": cfg})))


@pytest.fixture
def gated(tmp_path, storage_uri):
    """A governed run through the quality gate (the approval task's upstream)."""
    path = governed(tmp_path)
    run_pipeline(path, RUN, engine=FakeEngine(), until="quality_gate")
    return open_run(path, RUN)


@pytest.mark.parametrize("value, seconds", [("90s", 90), ("30m", 1800), ("24h", 86_400), ("7d", 604_800), (45, 45),
                                            ("2.5h", 9000)])
def test_timeout_is_a_duration(tmp_path, value, seconds):
    assert load_spec(governed(tmp_path, timeout=value)).publish.approval.timeout == seconds


@pytest.mark.parametrize("cfg, message", [
    ({"timeout": "soon"}, "publish.approval.timeout: expected a duration"),
    ({"timeout": "0s"}, "publish.approval.timeout"),
    ({"on_timeout": "approve"}, "publish.approval.on_timeout"),
    ({"assigned_users": [" "]}, "publish.approval.assigned_users: expected non-empty Airflow user ids"),
    ({"approvers": ["x"]}, "publish.approval.approvers"),
])
def test_bad_approval_settings_name_the_field(tmp_path, cfg, message):
    with pytest.raises(SpecError) as err:
        load_spec(governed(tmp_path, **cfg))
    assert message in str(err.value) and "gov.yaml" in str(err.value)


def test_approval_is_off_by_default_and_in_the_demo(tmp_path):
    assert load_spec(write_spec(tmp_path, tiny_spec_dict())).publish.approval.required is False
    from tests.conftest import ROOT

    assert load_spec(ROOT / "include" / "corpora" / "demo.yaml").publish.approval.required is False


def test_publish_refuses_without_a_decision_and_publishes_nothing(gated):
    with pytest.raises(approval.ApprovalMissing) as err:
        execute(gated, "publish")
    msg = str(err.value)
    assert "gov.yaml: field 'publish.approval.required' is true" in msg and "found no decision" in msg
    assert not storage.exists(gated.layout.latest) and not storage.list_files(gated.layout.versions_root)
    assert approval.state(gated)["status"] == "not_requested"


def test_request_body_is_the_gate_summary(gated):
    req = approval.request(gated, run_page="http://af/corpora/dags/synthcorpus_gov/runs/r1",
                           report_page="http://af/corpora/dags/synthcorpus_gov/runs/r1/files/report.html")
    gate = storage.read_json(gated.layout.output("quality_gate", "report"))
    assert req["subject"] == f"Release gov {gated.version}: gate passed, {gate['metrics']['documents']} documents"
    body = req["body"]
    # observed vs expected: one table row per expectation
    assert body.count("\n| run_metrics |") + body.count("\n| documents |") == len(gate["expectations"])
    assert "| expect_column_values_to_be_between |" in body or "| expect_" in body
    assert "**Counts:** prompts 6 → generated 6" in body
    assert "**Removed, by reason:** none" in body  # the fake engine's documents all pass
    assert "[run page](http://af/corpora/dags/synthcorpus_gov/runs/r1)" in body and "[gate report](" in body
    assert storage.read_json(gated.layout.output("approval", "request"))["gate_report_sha256"] == approval.gate_summary(gated)[1]
    lineage = storage.read_json(gated.layout.lineage)
    assert lineage["approval"]["status"] == "awaiting" and lineage["approval"]["assigned_users"] == ["alice"]
    _, body = approval.request_text(gated, gate, {"prompts": 10, "generated": 10, "documents": 6, "generation_failed": 1,
                                                  "filtered_out": {"too_short": 2, "refusal": 0, "generation_failed": 1},
                                                  "exact_duplicates": 1})
    assert "**Removed, by reason:** too_short 2, exact_duplicates 1, generation_failed 1" in body


def test_rejection_is_recorded_and_quarantined_and_publish_refuses(gated):
    asked = approval.request(gated)["requested_at"]
    at = dt.datetime.fromisoformat(asked) + dt.timedelta(seconds=42)
    decision = approval.record(gated, chosen="Reject", by=ALICE, at=at, comment="  too many refusals  ")
    assert decision["status"] == "rejected" and decision["by"] == ALICE and decision["comment"] == "too many refusals"
    assert decision["wait_s"] == 42.0
    quarantine = storage.read_json(gated.layout.quarantine)
    assert quarantine["approval"] == decision and quarantine["passed"] is True  # the gate passed; a person said no
    assert storage.read_json(gated.layout.lineage)["approval"] == decision
    with pytest.raises(approval.ApprovalMissing, match="found rejected by Alice at "):
        execute(gated, "publish")
    from synthcorpus.summary import run_summary

    text = run_summary(gated.spec, RUN)
    assert f"published   NOTHING (approval rejected by Alice at {decision['at']}: too many refusals)" in text
    assert f"approval    rejected by Alice at {decision['at']}: too many refusals" in text
    assert not storage.exists(gated.layout.latest)
    assert approval_metrics("gov", decision) == [("incr", "synthcorpus.gov.approval.rejected", 1),
                                                 ("gauge", "synthcorpus.gov.approval.wait_s", 42.0)]


def test_timeout_is_a_rejection_by_nobody(gated):
    approval.request(gated)
    decision = approval.record(gated, chosen="Reject", by=None, at=None, timed_out=True)
    assert decision["status"] == "timed_out" and decision["by"] is None
    assert storage.read_json(gated.layout.quarantine)["approval"]["status"] == "timed_out"
    with pytest.raises(approval.ApprovalMissing, match="found timed_out at"):
        execute(gated, "publish")


def test_approval_publishes_and_the_card_names_the_approver(gated):
    approval.request(gated)
    approval.record(gated, chosen="Reject", by={"id": "bob", "name": "bob"}, at=None, comment="first look")
    decision = approval.record(gated, chosen="Approve", by=ALICE, at=None, comment="spot-checked 20 documents")
    marker = execute(gated, "publish")
    manifest = storage.read_json(marker["outputs"]["manifest"])
    assert manifest["approval"] == decision
    lineage = storage.read_json(gated.layout.version_lineage)
    assert lineage["approval"] == decision and lineage == storage.read_json(gated.layout.lineage)
    card = storage.read_bytes(gated.layout.dataset_card).decode()
    assert f'- **Approved by Alice** at {decision["at"]}: "spot-checked 20 documents"' in card
    # every decision is kept, in order
    assert [d["status"] for d in approval.decisions(gated)] == ["rejected", "approved"]


def test_an_approval_is_of_one_gate_report(gated):
    """Re-running the gate (e.g. with an override) makes a new report: the old approval does not cover it."""
    approval.request(gated)
    approval.record(gated, chosen="Approve", by=ALICE, at=None)
    uri = gated.layout.output("quality_gate", "report")
    storage.write_json(uri, {**storage.read_json(uri), "override": {"reason": "changed", "at": "later"}})
    assert approval.approval_of(gated) is None
    with pytest.raises(approval.ApprovalMissing, match="found no decision"):
        execute(gated, "publish")
    with pytest.raises(approval.ApprovalMissing, match="the gate report changed after the approval was requested"):
        approval.record(gated, chosen="Approve", by=ALICE, at=None)


def test_overridden_gate_still_needs_the_approval_and_says_so(tmp_path, storage_uri):
    path = governed(tmp_path)
    data = yaml.safe_load(open(path))
    data["quality"]["min_documents"] = 50  # fails the gate
    open(path, "w").write(yaml.safe_dump(data))
    params = {"override_gate_reason": "known small run"}
    run_pipeline(path, RUN, params, engine=FakeEngine(), until="quality_gate")
    run = open_run(path, RUN, params)
    with pytest.raises(approval.ApprovalMissing):
        execute(run, "publish")
    req = approval.request(run)
    assert "gate FAILED (overridden)" in req["subject"]
    assert "> **Gate override** requested: known small run." in req["body"]
    assert "| run_metrics | expect_column_values_to_be_between | documents | >= 50 |" in req["body"]
    decision = approval.record(run, chosen="Approve", by=ALICE, at=None)
    assert decision["override"]["reason"] == "known small run" and decision["gate_passed"] is False
    execute(run, "publish")
    assert storage.read_json(run.layout.latest)["version"] == run.version


def test_cli_run_stops_after_the_gate_and_says_why(tmp_path, storage_uri, monkeypatch, capsys):
    from synthcorpus import cli
    from synthcorpus.stages import runner

    path = governed(tmp_path)
    real = runner.run_pipeline
    monkeypatch.setattr(runner, "run_pipeline", lambda *a, **kw: real(*a, engine=FakeEngine(), **kw))
    assert cli.main(["run", path, "--run-id", "cli-gov"]) == 1
    out = capsys.readouterr()
    assert "field 'publish.approval.required' is true: run cli-gov stops after the quality gate" in out.err
    assert "gate        PASSED" in out.out  # the run's summary
    assert "published   NOTHING (approval required, not asked yet)" in out.out
    run = open_run(path, "cli-gov")
    assert storage.read_json(run.layout.output("quality_gate", "report"))["passed"] is True
    assert not storage.exists(run.layout.latest)


def test_the_task_records_the_answer_and_does_not_ask_twice(gated):
    """ReleaseApproval outside a scheduler: resuming with an answer records it; a task whose gate report is
    approved already (or whose version is published) returns without a new request."""
    from synthcorpus.release_approval import release_approval

    task = release_approval(gated.spec, str(gated.spec.source_path))
    assert task.defaults == ["Reject"] and task.response_timeout == dt.timedelta(hours=2)
    assert task.assigned_users == [{"id": "alice", "name": "alice"}] and "comment" in task.params
    context = {"params": {"run_name": RUN}, "run_id": "manual__x"}
    approval.request(gated)
    at = dt.datetime.now(dt.timezone.utc)
    out = task.execute_complete(context, {"chosen_options": ["Approve"], "params_input": {"comment": "ok"},
                                          "responded_at": at, "responded_by_user": ALICE, "timedout": False})
    assert out["chosen_options"] == ["Approve"]
    (decision,) = approval.decisions(gated)
    assert decision["status"] == "approved" and decision["by"] == ALICE and decision["comment"] == "ok"
    assert task.execute(context) is None  # approved already: no second request (which would need the supervisor)
    execute(gated, "publish")
    assert task.execute(context) is None  # published
    assert len(approval.decisions(gated)) == 1
