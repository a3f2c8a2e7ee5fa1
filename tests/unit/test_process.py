"""The command-line processes end through process.exit_now: their exit code and all their output survive it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def test_exit_now_keeps_the_code_and_flushes_buffered_output(tmp_path):
    # Arrow's thread pools are alive (a Parquet round trip) and stdout is a pipe (block-buffered).
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(1000))}), path)
    code = ("import sys, pyarrow.parquet as pq; from synthcorpus.process import exit_now; "
            f"t = pq.read_table({str(path)!r}); print('rows', t.num_rows); print('err', file=sys.stderr); exit_now(3)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (3, "rows 1000\n", "err\n")


def test_the_console_script_exits_with_mains_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    script = str(Path(sys.executable).with_name("synthcorpus"))
    res = subprocess.run([script, "validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and str(bad) in res.stderr
    res = subprocess.run([script, "no-such-command"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "invalid choice" in res.stderr
