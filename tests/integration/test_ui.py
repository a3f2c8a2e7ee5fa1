"""The Corpora plugin on the real deployment (the `airflow_stack` fixture: its api-server loads plugins/,
SimpleAuthManager with a known admin password) in headless Chromium (Debian's, driven by playwright):
log in, open the nav view, the corpus tab of the DAG and the run tab of a DAG run, and check what they
show against lineage.json and the gate report; anonymous requests are refused; ids from the URL stay in
the corpus; document markup is shown as text; the progress view follows a generation that is still
going. Screenshots are saved as artifacts (and, with SYNTHCORPUS_UPDATE_SCREENSHOTS=1, into docs/).
One page is also rendered from SeaweedFS (s3://) storage."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.parse
from contextlib import contextmanager

import httpx
import pytest

from synthcorpus import storage
from synthcorpus.engines import Completion
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext, execute
from synthcorpus.stages.runner import run_pipeline
from tests.airflow_api import AirflowAPI
from tests.conftest import ROOT, tiny_spec_dict
from tests.fakes import FakeEngine
from tests.integration.conftest import browser_login
from tests.unit.test_ui import XSS, XSSEngine

pytestmark = pytest.mark.slow
DAG_ID = "synthcorpus_ui"
TIMEOUT_MS = 60_000


def ui_spec() -> dict:
    # The demo's size (30 documents), made in-process with the fake engine: the pages are under test, not the model.
    return tiny_spec_dict(name="ui", documents=30, **{
        "topics.labeler": "keywords", "generation.shard_size": 10, "generation.checkpoint_rows": 1,
    })


@contextmanager
def storage_env(uri: str):
    old = os.environ.get("SYNTHCORPUS_STORAGE_URI")
    os.environ["SYNTHCORPUS_STORAGE_URI"] = uri
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SYNTHCORPUS_STORAGE_URI", None)
        else:
            os.environ["SYNTHCORPUS_STORAGE_URI"] = old


FRENCH = ("Les enfants du village apprennent chaque matin les noms des oiseaux et des plantes qui poussent "
          "au bord de la rivière, et leurs parents racontent comment les fermes et les villes ont changé le "
          "paysage depuis de nombreuses années. ") * 3


class MixedEngine(FakeEngine):
    """FakeEngine with what a weak model does: every 7th document comes out in French (the language filter
    drops it), every 9th is the same text (exact dedup drops the copies); top-up fills the gap."""

    def generate(self, prompt, params, seed):
        done = super().generate(prompt, params, seed)
        n = len(self.calls)
        text = FRENCH if n % 7 == 0 else (super().generate("same", params, 1).text if n % 9 == 0 else None)
        if n % 9 == 0:
            self.calls.pop()
        return done if text is None else Completion(text, "stop", done.prompt_tokens, len(text.split()), 0.001)


class Gate(FakeEngine):
    """FakeEngine that generates one document per ``release()``d permit: a generation that is 'still going'
    for exactly as long as the test wants."""

    def __init__(self):
        super().__init__()
        self.permits = threading.Semaphore(0)

    def release(self, n: int) -> None:
        for _ in range(n):
            self.permits.release()

    def generate(self, prompt, params, seed):
        if not self.permits.acquire(timeout=300):
            raise TimeoutError("the test released no permit for 300 s")
        return super().generate(prompt, params, seed)


@pytest.fixture(scope="module")
def ui(airflow_stack):
    stack, corpora, _ = airflow_stack
    spec_path = corpora / "ui.yaml"
    uri = stack.env["SYNTHCORPUS_STORAGE_URI"]
    with storage_env(uri):  # this module's in-process runs and reads use the deployment's storage
        run_pipeline(str(spec_path), "v1", {}, engine=XSSEngine(), until="publish")
        run_pipeline(str(spec_path), "v2", {}, engine=MixedEngine(), until="publish")
        api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
        api.wait_for_dag(DAG_ID)
        # A DAG run whose run_name param names storage run v2 (the DAG stays paused: the run stays queued,
        # nothing executes); its run tab must show v2.
        dag_run_id = api.trigger(DAG_ID, conf={"run_name": "v2"})
        yield {"stack": stack, "api": api, "spec": load_spec(spec_path), "spec_path": spec_path, "storage": uri,
               "dag_run_id": dag_run_id, "base": stack.base_url.rstrip("/")}


@pytest.fixture
def page(ui, chromium_browser):
    page = browser_login(chromium_browser, ui["base"], "admin", ui["stack"].admin_password())
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_viewport_size({"width": 1400, "height": 1000})
    yield page
    page.context.close()
    assert not dialogs, f"a page opened a dialog: {dialogs}"


def _shot(page, screenshots, name):
    path = screenshots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SYNTHCORPUS_UPDATE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "screenshots" / path.name)
    return path


def _frame(page):
    """The plugin's iframe in the Airflow UI, once its content has loaded."""
    page.wait_for_selector("iframe", timeout=TIMEOUT_MS)
    frame = page.frame_locator("iframe").first
    frame.locator("main").wait_for(timeout=TIMEOUT_MS)
    return frame


def _charts_drawn(frame, n):
    """How many charts plotly.js drew (it marks a drawn chart's div and puts its SVG inside), once n are."""
    drawn = frame.locator(".chart.js-plotly-plot:has(svg.main-svg)")
    drawn.nth(n - 1).wait_for(timeout=TIMEOUT_MS)
    return drawn.count()


def _lineage(ui, run_id):
    return storage.read_json(RunContext.create(ui["spec"], run_id).layout.lineage)


def test_anonymous_requests_are_refused(ui):
    base = ui["base"]
    for path in ("/corpora/", "/corpora/static/plotly.min.js", f"/corpora/dags/{DAG_ID}", f"/corpora/dags/{DAG_ID}/runs/v1",
                 f"/corpora/dags/{DAG_ID}/runs/v1/progress.json", f"/corpora/dags/{DAG_ID}/runs/v1/files/lineage.json",
                 f"/corpora/dags/{DAG_ID}/runs/v1/files/data_docs/index.html", f"/corpora/dags/{DAG_ID}/diff?a=v1&b=v2"):
        r = httpx.get(base + path, timeout=30)
        assert r.status_code in (401, 403), (path, r.status_code)
        r = httpx.get(base + path, cookies={"_token": "not-a-token"}, timeout=30)
        assert r.status_code in (401, 403), (path, r.status_code)


def test_ids_from_the_url_stay_in_the_corpus(ui):
    token = ui["api"].client.headers["Authorization"]
    client = httpx.Client(base_url=ui["base"], headers={"Authorization": token}, timeout=30)
    assert client.get(f"/corpora/dags/{DAG_ID}/runs/v1/files/lineage.json").status_code == 200
    for path in (f"/corpora/dags/{DAG_ID}/runs/..%2F..%2F..%2Fetc", f"/corpora/dags/{DAG_ID}/runs/%2E%2E/progress.json",
                 f"/corpora/dags/{DAG_ID}/runs/v1/files/data_docs/..%2F..%2Fspec.json",
                 f"/corpora/dags/{DAG_ID}/runs/v1/files/data_docs/%2E%2E/%2E%2E/spec.json",
                 f"/corpora/dags/{DAG_ID}/runs/v1/files/spec.json", f"/corpora/dags/{DAG_ID}/diff?a=..%2Fv1&b=v2"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "spec_sha256" not in r.text


def test_the_nav_view_lists_the_corpus(ui, page, screenshots):
    page.goto(f"{ui['base']}/")
    page.get_by_role("link", name="Corpora").click()  # the nav entry the plugin adds
    page.wait_for_url("**/plugin/corpora**", timeout=TIMEOUT_MS)
    frame = _frame(page)
    row = frame.locator('#corpora tr[data-corpus="ui"]')
    row.wait_for(timeout=TIMEOUT_MS)
    latest = storage.read_json(RunContext.create(ui["spec"], "v2").layout.latest)
    assert latest["version"] == "v2" and "60" in row.inner_text()
    assert "passed" in row.inner_text() and "queued" in row.inner_text()  # the last DAG run's state, from Airflow
    assert "paused" in row.inner_text()  # no next refresh while the DAG is paused
    _shot(page, screenshots, "corpora")


def test_the_corpus_tab_charts_every_version(ui, page, screenshots):
    page.goto(f"{ui['base']}/dags/{DAG_ID}/plugin/corpus")
    frame = _frame(page)
    assert _charts_drawn(frame, 6) == 6
    rows = frame.locator("#versions tbody tr")
    assert rows.count() == 2
    newest = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
    assert (newest[0], newest[2], newest[3], newest[4], newest[5]) == ("v2", "60", "30", "v1", "passed")
    _shot(page, screenshots, "corpus")
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}")
    _charts_drawn(page, 6)
    _shot(page, screenshots, "corpus-page")


def test_the_run_tab_shows_the_run_its_dag_run_names(ui, page, screenshots):
    run_id = urllib.parse.quote(ui["dag_run_id"], safe="")
    page.goto(f"{ui['base']}/dags/{DAG_ID}/runs/{run_id}/plugin/corpus-run")
    frame = _frame(page)
    assert frame.locator("h1").inner_text() == "Run v2"
    counts = _lineage(ui, "v2")["counts"]
    shown = {r.get_attribute("data-step"): int(r.locator("td").inner_text().replace(",", ""))
             for r in frame.locator("#funnel tr").all()}
    assert shown == {"seeds": counts["seeds"], "topics": counts["topics_kept"], "prompts": counts["prompts"],
                     "generated": counts["generated"], "filtered": counts["after_filters"],
                     "deduplicated": counts["after_near_dedup"], "decontaminated": counts["after_near_dedup"] - counts["contaminated"],
                     "published": 30}
    gate = storage.read_json(RunContext.create(ui["spec"], "v2").layout.output("quality_gate", "report"))
    assert frame.locator("#gate tbody tr").count() == len(gate["expectations"])
    assert frame.locator("#gate tbody tr.fail").count() == sum(not e["success"] for e in gate["expectations"])
    assert _charts_drawn(frame, 6) >= 6  # funnel + format, audience, language, topic, word count
    assert frame.locator("#topics tbody tr").count() == counts["topics"]
    assert frame.locator("article.published").count() == 5
    _shot(page, screenshots, "run")
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/runs/v2")  # the same page on its own, whole
    _charts_drawn(page, 6)
    _shot(page, screenshots, "run-page")


def test_gate_report_data_docs_and_lineage_are_served_through_the_plugin(ui, page):
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/runs/v2")
    with page.expect_download() as download:
        page.locator("#lineage-link").click()
    assert json.loads(open(download.value.path()).read())["counts"] == _lineage(ui, "v2")["counts"]
    page.locator("#report-link").click()
    page.wait_for_load_state()
    assert page.url.endswith("/files/report.html") and "run_metrics" in page.content()
    # report.html links every shard's GX validation page in the Data Docs site (relative links, through the plugin)
    validation = page.locator('a[href^="data_docs/validations/"]').first
    validation.click()
    page.wait_for_load_state()
    assert "/files/data_docs/validations/" in page.url and "Great Expectations" in page.title() and "n_words" in page.content()
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/runs/v2")
    page.locator("#data-docs-link").click()
    page.wait_for_load_state()
    assert page.url.endswith("/files/data_docs/index.html") and page.title()
    favicon = page.evaluate("() => fetch('./static/images/favicon.ico').then(r => r.status)")
    assert favicon == 200  # the site's own files come through the plugin too


def test_document_markup_is_shown_as_text(ui, page, screenshots):
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/runs/v1")
    page.locator("article.published").first.wait_for(timeout=TIMEOUT_MS)
    texts = page.locator("article.published p").all_inner_texts()
    assert any(XSS in t for t in texts)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("article.published img").count() == 0


def test_the_diff_page_shows_what_v2_added(ui, page, screenshots):
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/diff?a=v1&b=v2")
    assert "30 rows in 1 file(s), on top of v1" in page.locator("#diff-added").inner_text()
    cells = page.locator("#diff-summary tbody tr").first.locator("td").all_inner_texts()
    assert cells == ["30", "60"]
    assert _charts_drawn(page, 10) >= 10
    _shot(page, screenshots, "diff")


def test_progress_follows_a_generation_that_is_still_going(ui, page, screenshots):
    run_pipeline(str(ui["spec_path"]), "live", {}, engine=FakeEngine(), until="plan_shards")
    engine = Gate()
    failed: list[BaseException] = []

    def generate():
        try:
            execute(RunContext.create(ui["spec"], "live", engine=engine), "generate", 0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failed.append(exc)

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    plan = [e["rows"] for e in storage.read_json(RunContext.create(ui["spec"], "live").layout.marker("plan_shards"))["outputs"]["shards"]]
    assert plan[0] == 10 and len(plan) >= 3  # a refresh: its yield on v2 sized the plan
    page.goto(f"{ui['base']}/corpora/dags/{DAG_ID}/runs/live")
    assert page.locator("#progress-done").inner_text() == "0"
    assert page.locator("#progress-planned").inner_text() == str(sum(plan))
    engine.release(4)  # checkpoint_rows 1: each document is a checkpoint part
    page.wait_for_function("() => document.getElementById('progress-done').textContent === '4'", timeout=TIMEOUT_MS)
    row = page.locator('#progress-shards tr[data-shard="shard-00000"]')
    assert "running" in row.inner_text() and "4 / 10" in row.inner_text()
    assert page.locator("#progress-tps").inner_text() != "–"
    _shot(page, screenshots, "progress")
    engine.release(6)
    worker.join(timeout=120)
    assert not worker.is_alive() and not failed, failed
    page.wait_for_function("() => document.getElementById('progress-done').textContent === '10'", timeout=TIMEOUT_MS)
    assert "done" in page.locator('#progress-shards tr[data-shard="shard-00000"]').inner_text()
    assert page.locator("#progress-state").inner_text() == "running"  # the other shards have not started


def test_a_run_page_on_s3_storage(seaweedfs, tmp_path):
    """The same pages over s3:// (SeaweedFS): the read model goes through the storage layer only."""
    import boto3
    from fastapi.testclient import TestClient

    from synthcorpus.ui.app import create_app
    from tests.conftest import write_spec

    boto3.client("s3").create_bucket(Bucket="ui-pages")
    folder = tmp_path / "corpora"
    folder.mkdir()
    path = write_spec(folder, tiny_spec_dict(name="ui_s3", documents=8, **{"topics.labeler": "keywords"}))
    with storage_env("s3://ui-pages/synthcorpus"):
        run_pipeline(str(path), "s1", {}, engine=FakeEngine(), until="publish")
        client = TestClient(create_app(folder))
        run = client.get("/dags/synthcorpus_ui_s3/runs/s1")
        lineage = storage.read_json("s3://ui-pages/synthcorpus/ui_s3/runs/s1/lineage.json")
        corpus = client.get("/dags/synthcorpus_ui_s3")
        docs = client.get("/dags/synthcorpus_ui_s3/runs/s1/files/data_docs/index.html")
    assert run.status_code == 200 and "s3://ui-pages/synthcorpus/ui_s3/runs/s1" in run.text
    assert f'data-step="generated"><th>generated</th><td class="n">{lineage["counts"]["generated"]}<' in run.text
    assert corpus.status_code == 200 and "<td>s1</td>" in corpus.text
    assert docs.status_code == 200
