"""`synthcorpus run`: the whole stage table in-process with the real bundled model, no Airflow; a second
run with the same run id resumes (every stage committed, nothing regenerated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synthcorpus.stages import TABLE
from tests.conftest import tiny_spec_dict, write_spec

BIN = Path(sys.executable).parent


def test_cli_run_publishes_and_resumes(tmp_path):
    spec = write_spec(tmp_path, tiny_spec_dict(name="cli", documents=4, **{"generation.max_tokens": 32,
                                                                          "generation.shard_size": 2}))
    env = {**os.environ, "SYNTHCORPUS_STORAGE_URI": (tmp_path / "storage").as_uri()}
    cmd = [BIN / "synthcorpus", "run", str(spec), "--run-id", "c1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("corpus      cli   run c1") == 1  # the summary, printed once
    assert "gate        PASSED" in first.stdout
    run = tmp_path / "storage" / "cli" / "runs" / "c1"
    latest = json.loads((tmp_path / "storage" / "cli" / "latest.json").read_text())
    assert latest["version"] == "c1" and latest["rows"] > 0
    # Every stage up to publish committed its marker(s) in its own folder.
    for stage in TABLE[: [s.name for s in TABLE].index("publish") + 1]:
        assert list((run / stage.name).glob("*.commit.json")), stage.name
    generated = {p: p.stat().st_mtime_ns for p in (run / "generate").glob("*.parquet")}
    assert len(generated) == 2

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is committed already" in again.stderr
    assert generated == {p: p.stat().st_mtime_ns for p in (run / "generate").glob("*.parquet")}
    assert again.stdout == first.stdout


def test_cli_run_shows_a_failed_gate_without_a_traceback(tmp_path):
    """A gate that cannot pass (50 documents required of 2): the gate's table, then one summary line naming
    the error, no traceback, exit 1; and nothing is published."""
    spec = write_spec(tmp_path, tiny_spec_dict(name="gatefail", documents=2, **{
        "generation.max_tokens": 16, "generation.shard_size": 2, "quality.min_documents": 50}))
    env = {**os.environ, "SYNTHCORPUS_STORAGE_URI": (tmp_path / "storage").as_uri()}
    proc = subprocess.run([BIN / "synthcorpus", "run", str(spec), "--run-id", "g1"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("synthcorpus run: ")]
    assert summary == ["synthcorpus run: GateFailed: quality gate failed: 1 expectation(s) not met"], proc.stderr[-3000:]
    assert "documents  >= 50     2         FAILED" in proc.stderr  # the gate's own table
    assert not (tmp_path / "storage" / "gatefail" / "latest.json").exists()
