"""No secret in what a run leaves behind: one corpus run through Airflow (``airflow dags test``) whose
generation needs an API key (llama.cpp's OpenAI-compatible server started with ``--api_key``) and whose
storage needs S3 credentials (SeaweedFS with one identity of random keys, no anonymous access). Then every
task log, every XCom value (and every other row of the metadata DB), every object of the run and the
published version in the bucket (lineage.json included), the OpenLineage events file and the command's
stdout/stderr are scanned: neither the API key nor the S3 secret nor the access key id appears.

Each source is checked non-empty (the scan cannot pass vacuously), and each secret is shown to be needed
(without it, or with a wrong one, the server refuses)."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore
import botocore.config
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, tiny_spec_dict, write_spec
from tests.integration.conftest import _ports
from tests.integration.conftest import start_seaweedfs as start_weed

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ALIAS = "smollm2-135m-instruct"
CORPUS = "secrets_scan"
RUN = "secrets-1"
KEY_ENV = "SYNTHCORPUS_TEST_LLM_KEY"  # generation.openai.api_key_env: the key reaches the engine only from here


@dataclass
class Secrets:
    # Random per run (alphanumeric: no encoding can hide them); repr=False keeps them out of pytest's reports.
    api_key: str = field(default_factory=lambda: f"sk-{secrets.token_hex(20)}", repr=False)
    access_key_id: str = field(default_factory=lambda: f"AKSC{secrets.token_hex(8).upper()}", repr=False)
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30).replace("-", "x").replace("_", "y"),
                                   repr=False)

    def needles(self) -> dict[str, str]:
        """What must not appear: each secret, and the first 12 characters of its random part (a truncated leak)."""
        out = {}
        for name, value, fixed in (("API key", self.api_key, "sk-"), ("S3 access key id", self.access_key_id, "AKSC"),
                                   ("S3 secret access key", self.secret_access_key, "")):
            out[name] = value
            out[f"{name} (fragment)"] = value[len(fixed):len(fixed) + 12]
        return out


def leaks(text: str | bytes, creds: Secrets) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [name for name, needle in creds.needles().items() if needle in text]


def _stop(proc: subprocess.Popen, grace: float = 3.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; ``group``: the process group the process leads
    (started with start_new_session=True), so its workers go too."""
    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None or group:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        send(signal.SIGKILL)
    proc.wait(timeout=10)


# --- S3 with credentials: SeaweedFS with one identity, anonymous access refused ---------------------------

def s3_client(endpoint: str, key_id: str | None, secret: str | None):
    cfg = botocore.config.Config(signature_version=botocore.UNSIGNED) if key_id is None else None
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, config=cfg)


def start_seaweedfs(data: Path, creds: Secrets) -> tuple[subprocess.Popen, str]:
    config = data / "s3.json"  # SeaweedFS's identities file: with one identity, unsigned requests are refused
    config.write_text(json.dumps({"identities": [{
        "name": "synthcorpus",
        "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    config.chmod(0o600)
    return start_weed(data, f"-s3.config={config}")


# --- an OpenAI-compatible server that needs the key -------------------------------------------------------

def start_llama_server(port: int, log: Path, api_key: str, timeout: float = 120.0) -> subprocess.Popen:
    """llama_cpp.server with the bundled model and ``--api_key`` (every request needs ``Bearer <key>``);
    waits until an authorised GET /v1/models answers."""
    from synthcorpus.engines.llamacpp import bundled_model_path

    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()), "--model_alias", ALIAS,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "2",
         "--verbose", "False", "--api_key", api_key],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {api_key}"}), timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                _stop(proc)
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)


def http_status(url: str, key: str | None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # no answer (not listening yet)


# --- the run -----------------------------------------------------------------------------------------------

@dataclass
class SecretRun:
    creds: Secrets
    home: Path
    bucket: str
    endpoint: str
    base_url: str
    result: subprocess.CompletedProcess = field(repr=False)
    refused: dict[str, int]
    objects: dict[str, bytes] = field(repr=False)  # every object in the bucket, by key
    api_server_log: Path


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory) -> SecretRun:
    creds = Secrets()
    base = tmp_path_factory.mktemp("secrets")
    weed_dir = base / "seaweedfs"
    weed_dir.mkdir()
    weed, endpoint = start_seaweedfs(weed_dir, creds)
    port = _ports(1)[0]
    server = None
    try:
        # S3: the secret is needed (unsigned, a wrong secret and an unknown key id are all refused).
        refused: dict[str, int] = {}
        bucket = f"corpora-{uuid.uuid4().hex[:8]}"
        for what, (key_id, secret) in {"s3 unsigned": (None, None), "s3 wrong secret": (creds.access_key_id, "wrong" * 8),
                                       "s3 unknown key id": ("AKIAUNKNOWN0000000", creds.secret_access_key)}.items():
            with pytest.raises(botocore.exceptions.ClientError) as exc:
                s3_client(endpoint, key_id, secret).create_bucket(Bucket=bucket)
            refused[what] = exc.value.response["ResponseMetadata"]["HTTPStatusCode"]
        s3 = s3_client(endpoint, creds.access_key_id, creds.secret_access_key)
        s3.create_bucket(Bucket=bucket)

        # The LLM server: the key is needed.
        server = start_llama_server(port, base / "llama-server.log", creds.api_key)
        base_url = f"http://127.0.0.1:{port}/v1"
        chat = {"model": ALIAS, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}
        refused["llm no key"] = http_status(f"{base_url}/chat/completions", None, chat)
        refused["llm wrong key"] = http_status(f"{base_url}/chat/completions", "sk-" + "0" * 40, chat)
        assert http_status(f"{base_url}/chat/completions", creds.api_key, chat) == 200

        # AIRFLOW_HOME (SQLite, as the e2e test and `make demo`), the spec, then `airflow dags test`.
        home = base / "airflow"
        corpora = base / "corpora"
        (home / "openlineage").mkdir(parents=True)
        corpora.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENAI_", "AIRFLOW"))}
        api_port, worker_log_port, trigger_log_port = _ports(3)
        env.update({
            "AIRFLOW_HOME": str(home), "PROJECT_DIR": str(ROOT), "SYNTHCORPUS_CORPORA_DIR": str(corpora),
            "AIRFLOW_API_PORT": str(api_port), "AIRFLOW_BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW_WORKER_LOG_PORT": str(worker_log_port), "AIRFLOW_TRIGGER_LOG_PORT": str(trigger_log_port),
            "AIRFLOW_PARALLELISM": "2",
            "SYNTHCORPUS_STORAGE_URI": f"s3://{bucket}/synthcorpus",
            "AWS_ACCESS_KEY_ID": creds.access_key_id, "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
            "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            KEY_ENV: creds.api_key,
        })
        subprocess.run([BIN / "synthcorpus", "render-config", ROOT / "airflow.cfg.template", home / "airflow.cfg"],
                       env=env, check=True, capture_output=True)
        migrate = subprocess.run([BIN / "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        write_spec(corpora, tiny_spec_dict(name=CORPUS, documents=4, **{
            "generation.engine": "openai", "generation.model": ALIAS,
            "generation.max_tokens": 32, "generation.shard_size": 2,
            "generation.openai": {"base_url": base_url, "api_key_env": KEY_ENV, "concurrency": 2,
                                  "timeout_s": 60, "max_retries": 1},
        }))
        # `--use-executor`: the tasks run as in a deployment, each in its own supervised process (the
        # LocalExecutor's) that reports to the api-server's execution API and writes its task log file under
        # AIRFLOW_HOME/logs (in-process, `airflow dags test` only prints them).
        api = subprocess.Popen([BIN / "airflow", "api-server", "--port", str(api_port), "--host", "127.0.0.1"],
                               env=env, stdout=open(base / "api-server.log", "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            deadline = time.time() + 180
            while http_status(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", None) != 200:
                if api.poll() is not None or time.time() > deadline:
                    pytest.fail(f"airflow api-server did not start: {(base / 'api-server.log').read_text()[-3000:]}")
                time.sleep(1)
            result = subprocess.run(
                [BIN / "airflow", "dags", "test", f"synthcorpus_{CORPUS}", "--use-executor",
                 "--conf", json.dumps({"run_name": RUN})],
                env=env, capture_output=True, text=True, timeout=900,
            )
        finally:
            _stop(api, grace=10, group=True)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        yield SecretRun(creds, home, bucket, endpoint, base_url, result, refused, objects, base / "api-server.log")
    finally:
        if server is not None:
            _stop(server)
        _stop(weed)


# --- the secrets were needed, and used ---------------------------------------------------------------------

def test_the_secrets_were_needed_and_the_run_used_them(secret_run):
    r = secret_run
    assert r.refused["llm no key"] == 401 and r.refused["llm wrong key"] == 401
    assert r.refused["s3 unsigned"] == r.refused["s3 wrong secret"] == r.refused["s3 unknown key id"] == 403
    # The run generated through the keyed server and stored its run and published version in the bucket.
    prefix = f"synthcorpus/{CORPUS}"
    lineage = json.loads(r.objects[f"{prefix}/versions/{RUN}/lineage.json"])
    assert lineage["model"]["engine"] == "openai" and lineage["model"]["base_url"] == r.base_url
    assert lineage["counts"]["generated"] >= 4 and lineage["counts"]["completion_tokens"] > 0
    assert json.loads(r.objects[f"{prefix}/runs/{RUN}/lineage.json"]) == lineage
    assert json.loads(r.objects[f"{prefix}/latest.json"])["version"] == RUN
    # The scanner itself finds a secret, whole or truncated, in text and in bytes.
    c = r.creds
    assert leaks(f"Authorization: Bearer {c.api_key[:-2]}", c) == ["API key (fragment)"]
    assert set(leaks(f"{c.access_key_id}:{c.secret_access_key}".encode(), c)) == {
        "S3 access key id", "S3 access key id (fragment)", "S3 secret access key", "S3 secret access key (fragment)"}


# --- the scan ----------------------------------------------------------------------------------------------

def test_no_secret_in_the_task_logs(secret_run):
    logs = [p for p in (secret_run.home / "logs").rglob("*") if p.is_file()]
    task_logs = [p for p in logs if "task_id=" in str(p)]
    tasks = {part.split("=", 1)[1] for p in task_logs for part in p.parts if part.startswith("task_id=")}
    assert {"seeds", "generate", "publish", "summary"} <= tasks, sorted(tasks)  # the scan is not vacuous
    assert sum(p.stat().st_size for p in task_logs) > 0
    found = {str(p.relative_to(secret_run.home)): hit for p in logs if (hit := leaks(p.read_bytes(), secret_run.creds))}
    assert found == {}


def _db_rows(home: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(home / "airflow.db")
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    finally:
        con.close()


def test_no_secret_in_xcom_or_the_metadata_db(secret_run):
    rows = _db_rows(secret_run.home)
    con = sqlite3.connect(secret_run.home / "airflow.db")
    try:
        xcoms = con.execute("SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = ?",
                            (f"synthcorpus_{CORPUS}",)).fetchall()
    finally:
        con.close()
    xcom_tasks = {task for task, _, _, _ in xcoms}
    assert {"seeds", "generate", "publish"} <= xcom_tasks, sorted(xcom_tasks)  # the stages' markers
    assert all(value for *_, value in xcoms)
    assert {task: hit for task, _, _, value in xcoms if (hit := leaks(str(value), secret_run.creds))} == {}
    # Every other row of the metadata DB too (DAG run conf, rendered fields, task instances, serialized DAGs).
    assert rows["dag_run"] and rows["task_instance"]
    found = {t: hit for t, table in rows.items() if (hit := leaks(repr(table), secret_run.creds))}
    assert found == {}


def _object_text(key: str, data: bytes) -> str:
    """An object's bytes, and for Parquet (compressed) its decoded rows and metadata too."""
    text = data.decode("utf-8", errors="replace")
    if key.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        text += repr(table.schema.metadata) + json.dumps(table.to_pylist(), default=str)
    return text


def test_no_secret_in_the_bucket(secret_run):
    objects = secret_run.objects
    prefix = f"synthcorpus/{CORPUS}"
    run_keys = [k for k in objects if k.startswith(f"{prefix}/runs/{RUN}/")]
    version_keys = [k for k in objects if k.startswith(f"{prefix}/versions/{RUN}/")]
    assert f"{prefix}/runs/{RUN}/lineage.json" in run_keys and f"{prefix}/versions/{RUN}/lineage.json" in version_keys
    assert any(k.endswith(".parquet") for k in version_keys) and len(run_keys) > 10
    assert all(objects[k] for k in version_keys)
    found = {k: hit for k, data in objects.items() if (hit := leaks(_object_text(k, data), secret_run.creds))}
    assert found == {}


def test_no_secret_in_the_openlineage_events(secret_run):
    events_file = secret_run.home / "openlineage" / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    jobs = {e["job"]["name"] for e in events if e["eventType"] == "COMPLETE"}
    assert {f"synthcorpus_{CORPUS}.generate", f"synthcorpus_{CORPUS}.publish"} <= jobs, sorted(jobs)
    assert leaks(events_file.read_bytes(), secret_run.creds) == []


def test_no_secret_in_the_command_output(secret_run):
    out = secret_run.result.stdout + secret_run.result.stderr
    assert "synthcorpus" in out and len(out) > 1000
    assert leaks(out, secret_run.creds) == []
    # and in the api-server's log (it ran with the same environment and served the tasks' execution API)
    api_log = secret_run.api_server_log.read_text(errors="replace")
    assert "/execution/" in api_log
    assert leaks(api_log, secret_run.creds) == []


def test_no_secret_anywhere_in_airflow_home(secret_run):
    """Belt and braces: every file the run left in AIRFLOW_HOME (logs, events, the DB file itself)."""
    files = [p for p in secret_run.home.rglob("*") if p.is_file()]
    assert len(files) > 10
    found = {str(p.relative_to(secret_run.home)): hit for p in files if (hit := leaks(p.read_bytes(), secret_run.creds))}
    assert found == {}
