"""dag_parse: how long Airflow's DagBag takes to parse the DAG files (ARCHITECTURE principle 7: well under 1 s
for every spec), for the shipped specs and for 50 specs side by side, each in a fresh process, median of 3.
Wall and CPU time both: CPU time is what parsing costs; wall time is what it costs on this machine now.

    python benchmarks/run.py dag_parse
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
w, c = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "dags": len(bag.dags),
                  "errors": len(bag.import_errors)}))
"""


def _parse(corpora: Path, home: Path) -> dict:
    import os
    import subprocess

    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "SYNTHCORPUS_CORPORA_DIR": str(corpora)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dag_parse(repeats: int = 3, many: int = 50) -> dict:
    from tests.conftest import tiny_spec_dict, write_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpora = tmp / "many"
        corpora.mkdir()
        for i in range(many):
            write_spec(corpora, tiny_spec_dict(name=f"c{i:03d}", schedule="@weekly"))
        rows = {}
        for label, folder in (("shipped", ROOT / "include" / "corpora"), (f"{many}_specs", corpora)):
            runs = [_parse(folder, tmp / "home") for _ in range(repeats)]
            rows[label] = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s")}
            rows[label].update(dags=runs[0]["dags"], errors=runs[0]["errors"])
    print("dag_parse: DagBag over dags/ (median of 3, fresh process each)")
    for label, r in rows.items():
        print(f"  {label:>10}: {r['dags']} DAGs, {r['errors']} import errors, wall {r['wall_s']:.3f} s, CPU {r['cpu_s']:.3f} s")
    ratio = rows[f"{many}_specs"]["cpu_s"] / rows["shipped"]["cpu_s"]
    print(f"  {many} specs / shipped (CPU): x{ratio:.2f}; goal: well under 1 s for every spec")
    return rows


if __name__ == "__main__":
    dag_parse()
