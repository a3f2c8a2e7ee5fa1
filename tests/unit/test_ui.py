"""The Corpora pages in-process (fake engine, FastAPI's TestClient, a fake auth dependency): what each page
shows equals what the markers and lineage.json say; ids from the URL cannot leave the corpus; document
text is escaped; generation progress is read from checkpoint parts while a shard is still going. The same
pages behind Airflow's real auth manager, in Chromium, are tested in tests/integration/test_ui.py."""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from synthcorpus import storage
from synthcorpus.engines import Completion
from synthcorpus.spec import load_spec
from synthcorpus.stages import TABLE
from synthcorpus.stages.contract import RunContext, execute
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.ui import charts, data
from synthcorpus.ui.app import create_app
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"


class XSSEngine(FakeEngine):
    """FakeEngine whose first document carries markup that must be shown as text."""

    def generate(self, prompt, params, seed):
        done = super().generate(prompt, params, seed)
        if len(self.calls) == 1:
            return Completion(XSS + " " + done.text, "stop", done.prompt_tokens, done.completion_tokens, 0.001)
        return done


def _auth(request: Request) -> None:
    if request.headers.get("authorization") != "Bearer ok":
        raise HTTPException(401, "not authenticated")


@pytest.fixture
def corpora(tmp_path, storage_uri):
    folder = tmp_path / "corpora"
    folder.mkdir()
    path = write_spec(folder, tiny_spec_dict(documents=8, **{"topics.labeler": "keywords"}))
    (folder / "broken.yaml").write_text("name: broken\ndocuments: -3\n")
    run_pipeline(str(path), "v1", {}, engine=XSSEngine(), until="publish")
    run_pipeline(str(path), "v2", {}, engine=FakeEngine(), until="publish")
    return folder, load_spec(path)


@pytest.fixture
def client(corpora):
    return TestClient(create_app(corpora[0], authenticated=_auth), headers={"Authorization": "Bearer ok"})


def test_the_run_report_counts_are_lineage_json_counts(corpora):
    _, spec = corpora
    report = data.run_report(spec, "v2")
    lineage = storage.read_json(RunContext.create(spec, "v2").layout.lineage)
    counts = lineage["counts"]
    funnel = {s["step"]: s["count"] for s in report["funnel"]}
    assert funnel == {"seeds": counts["seeds"], "topics": counts["topics_kept"], "prompts": counts["prompts"],
                      "generated": counts["generated"], "filtered": counts["after_filters"],
                      "deduplicated": counts["after_near_dedup"], "decontaminated": counts["after_near_dedup"] - counts["contaminated"],
                      "published": 8}
    assert [s["state"] for s in report["stages"] if s["stage"] != "summary"] == ["done"] * (len(TABLE) - 1)
    assert report["gate"]["passed"] is True and len(report["gate"]["expectations"]) == len(lineage["gate"]["expectations"])
    assert sum(report["distributions"]["counts"]["format"].values()) == counts["documents"] == 8
    assert sum(report["distributions"]["n_words"].values()) == 8
    assert len(report["topics"]) == counts["topics"]
    assert report["progress"]["state"] == "done" and report["progress"]["done"] == report["progress"]["planned"] == counts["prompts"]
    assert len(report["published"]) == data.SAMPLE_ROWS and all(d["run_id"] == "v2" for d in report["published"])


def test_versions_and_the_diff_show_what_the_refresh_added(corpora):
    _, spec = corpora
    versions = data.versions(spec)
    assert [(v["version"], v["rows"], v["new_rows"], v["base_version"]) for v in versions] == [("v1", 8, 8, None), ("v2", 16, 8, "v1")]
    diff = data.version_diff(spec, "v1", "v2")
    assert diff["added_rows"] == 8 and diff["b_builds_on_a"] and not diff["removed_files"]
    assert {m["metric"] for m in diff["metrics"]} >= {"documents", "duplicate_rate", "language_match_rate"}


def test_every_page_answers_and_shows_its_numbers(client, corpora):
    _, spec = corpora
    page = client.get("/")
    assert page.status_code == 200 and "synthcorpus_tiny" in page.text
    assert "broken.yaml" in page.text and "documents" in page.text  # the broken spec's problem, by field
    corpus = client.get("/dags/synthcorpus_tiny")
    assert corpus.status_code == 200 and corpus.text.count('class="chart"') == len(charts.corpus_charts(data.versions(spec)))
    assert '"version": "v2"' not in corpus.text and "&#34;rows&#34;" in corpus.text  # chart JSON is attribute-escaped
    run = client.get("/dags/synthcorpus_tiny/runs/v2")
    assert run.status_code == 200 and "Release approval" not in run.text  # the spec requires none
    lineage = json.loads(client.get("/dags/synthcorpus_tiny/runs/v2/files/lineage.json").content)
    generated = re.search(r'data-step="generated"><th>generated</th><td class="n">([\d,]+)<', run.text).group(1)
    assert int(generated.replace(",", "")) == lineage["counts"]["generated"]
    diff = client.get("/dags/synthcorpus_tiny/diff", params={"a": "v1", "b": "v2"})
    assert diff.status_code == 200 and "8 rows in 1 file(s), on top of v1" in diff.text
    assert client.get("/dags/synthcorpus_tiny/runs/v2/progress.json").json()["state"] == "done"
    report = client.get("/dags/synthcorpus_tiny/runs/v2/files/report.html")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    docs = client.get("/dags/synthcorpus_tiny/runs/v2/files/data_docs/index.html")
    assert docs.status_code == 200 and "Great Expectations" in docs.text or "expectation" in docs.text.lower()
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()


def test_a_run_that_has_not_started_says_so(client):
    page = client.get("/dags/synthcorpus_tiny/runs/manual__2026-12-02T04:00:00+00:00")
    assert page.status_code == 200 and "has written nothing yet" in page.text
    assert client.get("/dags/synthcorpus_tiny/runs/manual__2026-12-02T04:00:00+00:00/progress.json").json()["state"] == "planning"


def test_a_broken_spec_has_a_page_naming_its_problems(client):
    page = client.get("/dags/synthcorpus_broken")
    assert page.status_code == 200 and "Spec problems" in page.text and "documents" in page.text


def test_anonymous_requests_are_refused_everywhere(corpora):
    anonymous = TestClient(create_app(corpora[0], authenticated=_auth))
    for url in ("/", "/static/plotly.min.js", "/dags/synthcorpus_tiny", "/dags/synthcorpus_tiny/runs/v1",
                "/dags/synthcorpus_tiny/runs/v1/progress.json", "/dags/synthcorpus_tiny/runs/v1/files/lineage.json",
                "/dags/synthcorpus_tiny/diff?a=v1&b=v2"):
        assert anonymous.get(url).status_code == 401, url


@pytest.mark.parametrize("url", [
    "/dags/synthcorpus_tiny/runs/..%2F..%2Fetc",
    "/dags/synthcorpus_tiny/runs/../../etc",
    "/dags/synthcorpus_tiny/runs/%2E%2E",
    "/dags/synthcorpus_tiny/runs/v1/files/data_docs/..%2F..%2Fspec.json",
    "/dags/synthcorpus_tiny/runs/v1/files/data_docs/../../spec.json",
    "/dags/synthcorpus_tiny/runs/v1/files/spec.json",
    "/dags/synthcorpus_tiny/runs/v1/files/data_docs/%2Fetc%2Fpasswd",
    "/dags/synthcorpus_tiny/runs/..%2Fv2/progress.json",
    "/dags/synthcorpus_tiny/diff?a=..%2F..%2Fx&b=v2",
    "/dags/synthcorpus_tiny/diff?a=v1&b=..",
    "/dags/synthcorpus_nope",
])
def test_ids_from_the_url_cannot_leave_the_corpus(client, url):
    page = client.get(url)
    assert page.status_code == 404, (url, page.status_code)
    assert "root:x:0" not in page.text and "spec_sha256" not in page.text  # no file outside the site was read


def test_document_text_is_escaped(client, corpora):
    _, spec = corpora
    assert any(XSS in d["text"] for d in data.run_report(spec, "v1")["published"])  # the markup is in the data
    page = client.get("/dags/synthcorpus_tiny/runs/v1").text
    assert XSS not in page and "<script>window.__xss" not in page
    assert html.escape(XSS, quote=False)[:40] in page or html.escape(XSS)[:40] in page


class Blocked(Exception):
    pass


class StopAfter(FakeEngine):
    """Generates ``n`` documents, then fails as a killed worker would (the checkpoint parts stay)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def generate(self, prompt, params, seed):
        if len(self.calls) >= self.n:
            raise Blocked("stop")
        return super().generate(prompt, params, seed)


def test_progress_of_a_shard_in_progress_is_read_from_its_checkpoint_parts(tmp_path, storage_uri):
    path = write_spec(tmp_path, tiny_spec_dict(documents=8, **{"generation.checkpoint_rows": 1, "generation.shard_size": 8}))
    spec = load_spec(path)
    run_pipeline(str(path), "live", {}, engine=FakeEngine(), until="plan_shards")
    before = data.progress(spec, "live")
    assert before["state"] == "waiting" and before["done"] == 0 and before["planned"] == 8
    run = RunContext.create(spec, "live", engine=StopAfter(3))
    with pytest.raises(Blocked):
        execute(run, "generate", 0)
    now = data.progress(spec, "live")
    assert now["state"] == "running" and now["done"] == 3 and now["planned"] == 8
    shard = now["shards"][0]
    assert shard["state"] == "running" and shard["tokens"] == 3 * 80 and shard["tokens_per_s"] and shard["eta_s"] is not None
    execute(RunContext.create(spec, "live", engine=FakeEngine()), "generate", 0)  # resumes from the parts, commits
    assert data.progress(spec, "live")["state"] == "done"


def test_histogram_buckets_keep_every_count():
    fig = charts.histogram("w", {str(v): 1 for v in range(10, 110)}, bins=20)
    assert sum(fig["data"][0]["y"]) == 100 and len(fig["data"][0]["x"]) == 20


def test_a_run_gated_before_profile_json_existed_merges_its_shard_profiles(corpora):
    _, spec = corpora
    run = RunContext.create(spec, "v2")
    written = data.distributions(run)
    storage.delete(run.layout.output("quality_gate", "profile"))
    assert data.distributions(run) == written and sum(written["counts"]["format"].values()) == 8


def test_an_unreadable_file_gives_one_error_naming_it(client, corpora):
    _, spec = corpora
    manifest = data.corpus_layout(spec).manifest_of("v1")
    storage.write_text(manifest, "{not json")
    page = client.get("/dags/synthcorpus_tiny")
    assert page.status_code == 502 and "v1/manifest.json" in page.text and "expected JSON" in page.text


def test_the_run_page_shows_the_release_approval(tmp_path, storage_uri):
    from synthcorpus.stages import approval
    from synthcorpus.stages.contract import open_run

    folder = tmp_path / "gov"
    folder.mkdir()
    path = write_spec(folder, tiny_spec_dict(name="gov", documents=4, **{
        "publish.approval": {"required": True, "assigned_users": ["alice"]}}))
    run_pipeline(str(path), "r1", {}, engine=FakeEngine(), until="quality_gate")
    client = TestClient(create_app(folder, authenticated=_auth), headers={"Authorization": "Bearer ok"})
    run = open_run(str(path), "r1")
    approval.request(run)
    page = client.get("/dags/synthcorpus_gov/runs/r1").text
    assert "awaiting approval</span>" in page and " of alice" in page
    assert 'href="/dags/synthcorpus_gov/runs/r1/tasks/approval/required_actions"' in page
    approval.record(run, chosen="Reject", by={"id": "alice", "name": "Alice"}, at=None, comment="<b>not yet</b>")
    page = client.get("/dags/synthcorpus_gov/runs/r1").text
    assert "rejected</span>" in page and "by <b>Alice</b>" in page and "&lt;b&gt;not yet&lt;/b&gt;" in page
    assert "nothing was published" in page and 'id="approval-history"' not in page
    approval.record(run, chosen="Approve", by={"id": "alice", "name": "Alice"}, at=None)
    page = client.get("/dags/synthcorpus_gov/runs/r1").text
    assert "approved</span> by <b>Alice</b>" in page and page.count("<tr><td>") >= 2  # both decisions listed
    assert 'id="approval-history"' in page
