"""Release approval under the real scheduler, api-server and Celery worker (synthcorpus.deploy.Stack):
three governed corpora (``publish.approval.required``) run at once on the real bundled model; each run's
approval task waits in Airflow's ``awaiting_input`` state with the gate summary as its body. One is
approved and one rejected through ``PATCH .../hitlDetails`` (what the UI's Required Actions page sends);
the third is left unanswered until its timeout, which the scheduler resolves as Reject. Then: what was
published (only the approved one), and where each decision is recorded (decisions.json, lineage.json, the
quarantine report, the dataset card, the Corpora run page)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from synthcorpus import storage
from synthcorpus.layout import RunLayout
from synthcorpus.publish import verify_version
from synthcorpus.spec import load_spec
from tests.airflow_api import AirflowAPI
from tests.conftest import ROOT, tiny_spec_dict
from tests.integration.conftest import browser_login

pytestmark = pytest.mark.slow
CORPORA = {"gov_approve": "1h", "gov_reject": "1h", "gov_timeout": "5s"}
RUN = "release-1"


def approval_specs() -> list[dict]:
    return [tiny_spec_dict(name=name, documents=4, **{
        "generation.max_tokens": 24, "generation.shard_size": 4, "tasks.retries": 0,
        "publish.approval": {"required": True, "assigned_users": ["admin"], "timeout": timeout}})
        for name, timeout in CORPORA.items()]


def _awaiting(api: AirflowAPI, dag_id: str, run_id: str, answered_ok: bool = False):
    """The approval task once it waits for input (or, ``answered_ok``, once it has been answered: a short
    timeout may resolve it before this poll sees it waiting)."""
    def check():
        tis = api.task_instances(dag_id, run_id, "approval")
        if tis and (tis[0]["state"] == "awaiting_input" or (answered_ok and tis[0]["state"] == "success")):
            return tis[0]
        states = {t["task_id"]: t["state"] for t in api.task_instances(dag_id, run_id)}
        assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
        return None
    return check


@pytest.fixture(scope="module")
def governed(airflow_stack):
    stack, corpora, base = airflow_stack
    api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
    runs = {}
    for name in CORPORA:
        dag_id = f"synthcorpus_{name}"
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)  # no schedule: unpausing only lets the triggered run execute
        runs[name] = api.trigger(dag_id, {"run_name": RUN})
    awaiting = {name: api.wait(f"{name}'s approval task to wait for input",
                               _awaiting(api, f"synthcorpus_{name}", run_id, answered_ok=name == "gov_timeout"),
                               900, every_s=2.0) for name, run_id in runs.items()}
    # What a person sees: the request with the gate summary, listed for the run.
    details = {name: api.get(f"/dags/synthcorpus_{name}/dagRuns/{run_id}/hitlDetails")
               for name, run_id in runs.items()}
    storage_uri = stack.env["SYNTHCORPUS_STORAGE_URI"]
    layouts = {name: RunLayout(storage_uri, name, RUN) for name in CORPORA}
    specs = {name: load_spec(corpora / f"{name}.yaml") for name in CORPORA}
    return {"api": api, "stack": stack, "runs": runs, "awaiting": awaiting, "details": details, "layouts": layouts,
            "specs": specs}


def _respond(g, name: str, option: str, comment: str):
    return g["api"].client.patch(
        f"/dags/synthcorpus_{name}/dagRuns/{g['runs'][name]}/taskInstances/approval/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {"comment": comment}})


def _states(g, name: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in g["api"].task_instances(f"synthcorpus_{name}", g["runs"][name])
            if t["map_index"] == -1}


def _run_page(g, name: str) -> str:
    token = g["api"].client.headers["Authorization"]
    r = httpx.get(f"{g['stack'].base_url.rstrip('/')}/corpora/dags/synthcorpus_{name}/runs/{g['runs'][name]}",
                  headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    return r.text


def test_the_request_shows_the_gate_summary_while_the_run_waits(governed):
    g = governed
    (detail,) = g["details"]["gov_approve"]["hitl_details"]
    layout = g["layouts"]["gov_approve"]
    gate = storage.read_json(layout.output("quality_gate", "report"))
    assert detail["subject"] == f"Release gov_approve {RUN}: gate passed, {gate['metrics']['documents']} documents"
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert [u["id"] for u in detail["assigned_users"]] == ["admin"]
    body = detail["body"]
    assert body.count("\n| run_metrics |") + body.count("\n| documents |") == len(gate["expectations"])
    assert "**Counts:** prompts 4" in body
    page = f"{g['stack'].base_url.rstrip('/')}/corpora/dags/synthcorpus_gov_approve/runs/"
    assert f"[run page]({page}" in body and "/files/report.html)" in body
    assert _states(g, "gov_approve")["publish"] in (None, "none", "scheduled")  # not run: nothing published
    assert not storage.exists(layout.latest)
    assert storage.read_json(layout.lineage)["approval"]["status"] == "awaiting"
    assert "awaiting approval" in _run_page(g, "gov_approve")


def test_the_request_in_the_airflow_ui(governed, chromium_browser, screenshots):
    """Airflow's own Required Actions view of the run shows the request: subject, gate table, the buttons."""
    g = governed
    base = g["stack"].base_url.rstrip("/")
    page = browser_login(chromium_browser, base, "admin", g["stack"].admin_password())
    try:
        page.set_viewport_size({"width": 1400, "height": 1100})
        page.goto(f"{base}/dags/synthcorpus_gov_approve/runs/{g['runs']['gov_approve']}/tasks/approval/required_actions")
        page.get_by_text(f"Release gov_approve {RUN}: gate passed").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Approve").first.wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Reject").count() >= 1
        assert page.get_by_text("expect_column_values_to_be_between").count() >= 1  # the body's gate table
        path = screenshots / "approval-request.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get("SYNTHCORPUS_UPDATE_SCREENSHOTS"):
            shutil.copy(path, ROOT / "docs" / "screenshots" / path.name)
    finally:
        page.context.close()


def test_approve_publishes_and_records_who_when_and_why(governed):
    g = governed
    r = _respond(g, "gov_approve", "Approve", "spot-checked: fine")
    assert r.status_code == 200, r.text[:500]
    assert _respond(g, "gov_approve", "Reject", "too late").status_code == 409  # answered once
    run = g["api"].wait_run("synthcorpus_gov_approve", g["runs"]["gov_approve"], 600)
    assert run["state"] == "success"
    states = _states(g, "gov_approve")
    assert states["approval"] == states["publish"] == states["summary"] == "success"
    layout = g["layouts"]["gov_approve"]
    latest = storage.read_json(layout.latest)
    manifest = verify_version(latest["uri"])
    decision = manifest["approval"]
    assert decision["status"] == "approved" and decision["by"]["id"] == "admin" and decision["comment"] == "spot-checked: fine"
    assert decision["wait_s"] >= 0 and decision["at"] >= decision["requested_at"]
    assert storage.read_json(layout.version_lineage)["approval"] == decision
    assert "**Approved by admin**" in storage.read_bytes(layout.dataset_card).decode()
    assert not storage.exists(layout.quarantine)
    assert "approved</span> by <b>admin</b>" in _run_page(g, "gov_approve")


def test_reject_publishes_nothing_and_quarantines_the_report(governed):
    g = governed
    r = _respond(g, "gov_reject", "Reject", "openings too repetitive")
    assert r.status_code == 200, r.text[:500]
    run = g["api"].wait_run("synthcorpus_gov_reject", g["runs"]["gov_reject"], 600)
    states = _states(g, "gov_reject")
    assert states["approval"] == "success" and states["publish"] == states["summary"] == "skipped", states
    assert run["state"] == "success"  # a decision was made; nothing failed
    layout = g["layouts"]["gov_reject"]
    assert not storage.exists(layout.latest) and not storage.list_files(layout.versions_root)
    quarantine = storage.read_json(layout.quarantine)
    assert quarantine["approval"]["status"] == "rejected" and quarantine["approval"]["by"]["id"] == "admin"
    assert quarantine["approval"]["comment"] == "openings too repetitive"
    assert storage.read_json(layout.lineage)["approval"] == quarantine["approval"]
    page = _run_page(g, "gov_reject")
    assert "rejected</span> by <b>admin</b>" in page and "openings too repetitive" in page


def test_no_answer_in_time_is_a_rejection(governed):
    g = governed
    run = g["api"].wait_run("synthcorpus_gov_timeout", g["runs"]["gov_timeout"], 600)
    states = _states(g, "gov_timeout")
    assert states["approval"] == "success" and states["publish"] == "skipped", states
    assert run["state"] == "success"
    layout = g["layouts"]["gov_timeout"]
    assert not storage.exists(layout.latest)
    decision = storage.read_json(layout.quarantine)["approval"]
    assert decision["status"] == "timed_out" and decision["by"] is None
    assert decision["wait_s"] >= 5  # the spec's timeout; the scheduler's sweep resolved it
    (detail,) = g["api"].get(f"/dags/synthcorpus_gov_timeout/dagRuns/{g['runs']['gov_timeout']}/hitlDetails")["hitl_details"]
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"] is None
    assert "timed out</span>" in _run_page(g, "gov_timeout")
