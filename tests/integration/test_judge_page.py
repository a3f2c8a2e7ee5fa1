"""The run page's LLM judge section in headless Chromium: the Corpora app (``ui.app.create_app``, as the
plugin mounts it, without Airflow's auth) served by uvicorn in its own process, over a judged run (fake
judge) and over one whose judge scored nothing. plotly.js draws the score charts; the screenshot goes to
the artifacts and, with SYNTHCORPUS_UPDATE_SCREENSHOTS=1, to docs/screenshots/judge-section.png."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from synthcorpus.stages.runner import run_pipeline
from tests.conftest import ROOT, tiny_spec_dict, write_spec
from tests.fakes import FakeJudgeEngine
from tests.integration.test_openai_server import free_port

pytestmark = pytest.mark.slow
TIMEOUT_MS = 60_000
APP = "from synthcorpus.ui.app import create_app; import sys; app = create_app(sys.argv[1])"


@pytest.fixture
def app_url(tmp_path, storage_uri):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    judged = {"enabled": True, "max_rounds": 1, "thresholds": {"coherence": 3}}
    run_pipeline(str(write_spec(corpora, tiny_spec_dict(name="judged", documents=6, **{"judge": judged}))), "j1",
                 engine=FakeJudgeEngine(), until="publish")
    run_pipeline(str(write_spec(corpora, tiny_spec_dict(name="unjudged", documents=4, **{
        "judge": {**judged, "max_retries": 0, "max_rounds": 0}}))), "j2", engine=FakeJudgeEngine(malformed=5), until="publish")
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(f"import uvicorn\n{APP}\nuvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n")
    log = open(tmp_path / "uvicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(corpora)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "SYNTHCORPUS_STORAGE_URI": storage_uri})
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it answers, or it died
            try:
                urllib.request.urlopen(url + "/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"uvicorn exited: {(tmp_path / 'uvicorn.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_the_judge_section_draws_the_scores_and_says_when_there_are_none(app_url, chromium_browser, screenshots):
    page = chromium_browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{app_url}/dags/synthcorpus_judged/runs/j1", timeout=TIMEOUT_MS)
        status = page.locator("#judge-status")
        status.wait_for(timeout=TIMEOUT_MS)
        assert "scored 6 of 6" in status.inner_text()
        rows = page.locator("#judge-scores tbody tr")
        assert rows.count() == 4 and "coherence" in page.locator("#judge-scores").inner_text()
        drawn = page.locator("[id^=score-chart-].js-plotly-plot:has(svg.main-svg)")
        drawn.nth(2).wait_for(timeout=TIMEOUT_MS)  # per score, per format, per audience
        assert drawn.count() == 3
        # the grouped bars: one series per rubric dimension in the first chart's legend
        legend = page.locator("#score-chart-1 g.legend").text_content()
        assert all(d in legend for d in ("educational value", "coherence", "faithfulness", "audience fit"))
        path = screenshots / "judge-section.png"
        page.locator("section#judge").screenshot(path=str(path))
        if os.environ.get("SYNTHCORPUS_UPDATE_SCREENSHOTS"):
            shutil.copy(path, ROOT / "docs" / "screenshots" / path.name)

        page.goto(f"{app_url}/dags/synthcorpus_unjudged/runs/j2", timeout=TIMEOUT_MS)
        page.locator("#judge-none").wait_for(timeout=TIMEOUT_MS)
        assert "Not one document was scored" in page.locator("#judge-none").inner_text()
        assert page.locator("[id^=score-chart-]").count() == 0
        assert "malformed reply" in page.locator("#judge-status").inner_text()
    finally:
        page.close()
