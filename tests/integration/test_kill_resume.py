"""SIGKILL the real worker (llama.cpp, bundled model) at several points while it writes to S3
(SeaweedFS), re-run it, and check that the shard holds every prompt id exactly once and that rows
checkpointed before a kill were not generated again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import boto3
import pyarrow as pa
import pytest
import s3fs

from synthcorpus import storage
from synthcorpus.generation import META_KEY
from synthcorpus.layout import RunLayout
from synthcorpus.stages.contract import read_marker
from synthcorpus.stages.generate import work_unit

N = 10


@pytest.fixture
def s3_shard(seaweedfs):
    bucket = f"resume-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    config = {"engine": "llamacpp", "model": "smollm2-135m-instruct", "n_ctx": 512, "max_tokens": 24,
              "temperature": 0.7, "top_p": 0.95, "repeat_penalty": 1.1, "seed": 0, "run_id": "kill",
              "max_attempts": 1, "checkpoint_rows": 2, "checkpoint_seconds": 3600, "quality": {"min_words": 1}}
    rows = [{"prompt_id": f"p{i:02d}", "prompt": f"Write one sentence about the number {i}.", "seed": i, "language": "en"}
            for i in range(N)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({META_KEY: json.dumps(config).encode()})
    unit = work_unit(RunLayout(f"s3://{bucket}", "kill", "kill"), 0)  # plan_shards/, generate/ of run "kill"
    storage.write_parquet(unit["input"], table)
    return unit


def _parts(unit):
    s3fs.S3FileSystem.clear_instance_cache()
    return sorted(u for u in storage.list_files(unit["parts"]) if u.endswith(".parquet"))


def _marker(unit):
    """The shard's committed marker (what the worker writes last), or None."""
    s3fs.S3FileSystem.clear_instance_cache()
    return read_marker(unit["marker"])


def _worker(unit):
    return subprocess.Popen(
        [sys.executable, "-m", "synthcorpus.worker", "generate", "--input", unit["input"], "--output", unit["output"],
         "--parts", unit["parts"], "--marker", unit["marker"], "--shard", str(unit["index"])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(),
    )


# Waits are for events (a checkpoint part stored, the worker's exit), with deadlines generous enough for a
# machine whose cores are busy (llama.cpp falls from ~90 to ~1 tok/s): reaching one is a failure, never a kill.
DEADLINE_S = 1800


def _kill_when(proc, unit, parts_at_least, timeout=DEADLINE_S):
    deadline = time.monotonic() + timeout
    while len(_parts(unit)) < parts_at_least:
        if proc.poll() is not None:
            pytest.fail(f"worker ended before the kill point: {proc.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {parts_at_least} checkpoint parts after {timeout} s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.timeout(3 * DEADLINE_S)
def test_sigkill_at_several_points_then_resume_is_exactly_once(s3_shard):
    unit = s3_shard
    # Kill right after start (nothing checkpointed), then after 1 and after 3 checkpoint parts.
    proc = _worker(unit)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seen: dict[str, dict] = {}
    for at_least in (1, 3):
        _kill_when(_worker(unit), unit, at_least)
        for uri in _parts(unit):
            for row in storage.read_parquet(uri).to_pylist():
                seen.setdefault(row["prompt_id"], row)
    assert _marker(unit) is None  # not committed
    checkpointed = len(seen)
    assert 6 <= checkpointed < N  # three parts of two rows at least, but not the whole shard

    final = _worker(unit)
    output, _ = final.communicate(timeout=DEADLINE_S)
    assert final.returncode == 0, output.decode()[-2000:]
    assert f"resuming: {checkpointed} of {N} rows finished" in output.decode()
    rows = storage.read_parquet(unit["output"]).to_pylist()
    assert [r["prompt_id"] for r in rows] == [f"p{i:02d}" for i in range(N)]  # each id once, plan order
    by_id = {r["prompt_id"]: r for r in rows}
    for pid, row in seen.items():  # checkpointed rows were kept, not generated again
        assert by_id[pid]["text"] == row["text"] and by_id[pid]["latency_s"] == row["latency_s"]
    assert _marker(unit)["stats"]["rows"] == N
    assert _parts(unit) == []
