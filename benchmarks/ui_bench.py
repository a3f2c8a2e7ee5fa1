"""Benchmark of the Corpora UI pages (synthcorpus.ui) on a small and a large finished run, side by side.

ui_pages: two corpora, each with one finished run really produced by the pipeline
(``synthcorpus.stages.runner.run_pipeline(spec, run, {}, engine=FakeEngine(), until="publish")``, spec
``tests.conftest.tiny_spec_dict`` with ``topics.labeler: keywords``, ``refresh.expected_yield: 1.0``):
``small`` with 1 000 documents and ``large`` with 100 000, both with ``generation.shard_size`` = large / 100
(1 000: 1 shard vs 100 shards). Each run is built in its own child process under a temporary file:// root
in /tmp (deleted afterwards); the build is timed apart and is not the measurement.

Measured in this one process, on one ``create_app(corpora_dir)`` per corpus (no auth, the default
AirflowInfo; each corpora folder holds only its own spec, so ``/`` lists one corpus in both), through
``fastapi.testclient.TestClient``: GET ``/``, ``/dags/{dag_id}``, ``/dags/{dag_id}/runs/{run}``,
``/dags/{dag_id}/runs/{run}/progress.json`` and ``/dags/{dag_id}/diff?a={run}&b={run}`` (the run's version
against itself). One warm-up request per page, then 5 rounds; within a round every page of small and
large is requested in turn (interleaved, so both see the same machine load). Reported per page: the
median wall time of the 5 (min and max too), the response size in bytes, the ratio large / small, and
whether the large run's page answers in < 1 s.

Run: .venv/bin/python benchmarks/run.py ui_pages (full: ~6.5 min here, nearly all of it building the 100 k run),
or .venv/bin/python benchmarks/ui_bench.py [--quick] [--small N] [--large N] [--shard-size N] [--repeats N]
[--root DIR] [--profile]
(--quick: 200 vs 5 000 documents, ~70 s here; --root DIR: build into DIR and keep it, or reuse the runs already
there; --profile: cProfile of what each large-run page's route calls, top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = 1_000, 100_000
QUICK_SMALL, QUICK_LARGE = 200, 5_000
SHARDS = 100  # shards of the large run (shard size = large / SHARDS, for both runs)
REPEATS = 5
RUN_ID = "v1"
TARGET_S = 1.0
PAGES = ("/", "/dags/{dag}", "/dags/{dag}/runs/{run}", "/dags/{dag}/runs/{run}/progress.json",
         "/dags/{dag}/diff?a={run}&b={run}")
STORAGE_ENV = "SYNTHCORPUS_STORAGE_URI"


def _corpus_dir(root: Path, name: str) -> Path:
    return root / "corpora" / name


def _storage(root: Path) -> str:
    return (root / "storage").as_uri()


def _spec_dict(name: str, documents: int, shard_size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import tiny_spec_dict

    return tiny_spec_dict(name=name, documents=documents, **{
        "topics.labeler": "keywords", "generation.shard_size": shard_size, "refresh.expected_yield": 1.0})


def build(root: Path, name: str, documents: int, shard_size: int) -> dict:
    """Run the pipeline to publish for one corpus, in a child process; returns its timing and counts.
    A run already published under ``root`` (same documents and shard size) is reused."""
    folder = _corpus_dir(root, name)
    stamp = folder / "built.json"
    if stamp.exists():
        done = json.loads(stamp.read_text())
        if (done["documents"], done["shard_size"]) == (documents, shard_size):
            return {**done, "reused": True}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {**os.environ, STORAGE_ENV: _storage(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "_build", str(root), name, str(documents), str(shard_size)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"building {name} ({documents} docs) failed:\n{out.stderr[-4000:]}")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    done = {**child, "documents": documents, "shard_size": shard_size, "wall_s": time.perf_counter() - started}
    stamp.write_text(json.dumps(done))
    return {**done, "reused": False}


def _build_child(root: Path, name: str, documents: int, shard_size: int) -> None:
    import resource

    sys.path.insert(0, str(ROOT))
    from synthcorpus import storage
    from synthcorpus.spec import load_spec
    from synthcorpus.stages.contract import RunContext
    from synthcorpus.stages.runner import run_pipeline
    from tests.conftest import write_spec
    from tests.fakes import FakeEngine

    path = write_spec(_corpus_dir(root, name), _spec_dict(name, documents, shard_size))
    started = time.perf_counter()
    markers = run_pipeline(str(path), RUN_ID, {}, engine=FakeEngine(), until="publish")
    seconds = time.perf_counter() - started
    lineage = storage.read_json(RunContext.create(load_spec(path), RUN_ID).layout.lineage)
    publish = markers["publish"]
    print(json.dumps({"pipeline_s": round(seconds, 1), "shards": len(markers["generate"]),
                      "published": (publish.get("stats") or {}).get("new_rows"),
                      "generated": (lineage.get("counts") or {}).get("generated"),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def _storage_bytes(root: Path, name: str) -> int:
    base = root / "storage" / name
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.exists() else 0


def _fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def measure(root: Path, names: dict[str, str], repeats: int) -> dict[str, dict[str, dict]]:
    """{label: {page: {"times": [...], "bytes": n, "status": code}}} for every page of every corpus."""
    from fastapi.testclient import TestClient

    from synthcorpus.ui.app import create_app

    clients = {label: TestClient(create_app(_corpus_dir(root, name))) for label, name in names.items()}
    urls = {label: {p: p.format(dag=f"synthcorpus_{name}", run=RUN_ID) for p in PAGES} for label, name in names.items()}
    out: dict[str, dict[str, dict]] = {label: {p: {"times": []} for p in PAGES} for label in names}
    for label, client in clients.items():  # warm-up: one request per page
        for page, url in urls[label].items():
            response = client.get(url)
            out[label][page].update(status=response.status_code, bytes=len(response.content))
    for _ in range(repeats):
        for page in PAGES:
            for label, client in clients.items():
                started = time.perf_counter()
                response = client.get(urls[label][page])
                out[label][page]["times"].append(time.perf_counter() - started)
                out[label][page]["status"] = response.status_code
                out[label][page]["bytes"] = len(response.content)
    return out


def profile(root: Path, name: str, top: int = 16) -> None:
    """cProfile of what each page's route calls (``data`` then ``pages``), in this thread: TestClient runs
    the routes in a worker thread, which cProfile does not see. One warm-up call each first."""
    from synthcorpus.spec import load_spec
    from synthcorpus.ui import data, pages

    spec = load_spec(_corpus_dir(root, name) / f"{name}.yaml")
    routes = {
        "/": lambda: pages.corpora_page("", "", [{**data.corpus_summary(spec), "airflow": {}}], {}),
        "/dags/{dag}": lambda: pages.corpus_page("", spec.name, spec.dag_id, summary=data.corpus_summary(spec), airflow={},
                                                 versions=data.versions(spec), runs=data.runs(spec),
                                                 spec_text=data.spec_text(spec), problems=[]),
        "/dags/{dag}/runs/{run}": lambda: pages.run_page("", data.run_report(spec, RUN_ID), RUN_ID),
        "/dags/{dag}/runs/{run}/progress.json": lambda: json.dumps(data.progress(spec, RUN_ID)),
        "/dags/{dag}/diff?a={run}&b={run}": lambda: pages.diff_page("", spec.name, spec.dag_id,
                                                                  data.version_diff(spec, RUN_ID, RUN_ID)),
    }
    for page, call in routes.items():
        call()
        prof = cProfile.Profile()
        prof.enable()
        call()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        total = next((ln.strip() for ln in lines if "function calls" in ln), "")
        start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
        print(f"\n--- cProfile {page} ({name}): {total}")
        print("\n".join(lines[start:start + top + 1]))


def ui_pages(small: int = SMALL, large: int = LARGE, shard_size: int | None = None, repeats: int = REPEATS,
             root: str | None = None, do_profile: bool = False) -> None:
    shard_size = shard_size or max(1, large // SHARDS)
    keep = root is not None
    base = Path(root) if root else Path(tempfile.mkdtemp(prefix="ui-bench-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ[STORAGE_ENV] = _storage(base)  # the app reads the runs from here (and nothing else)
    names = {"small": "ui_small", "large": "ui_large"}
    sizes = {"small": small, "large": large}
    try:
        built = {}
        for label, name in names.items():
            built[label] = b = build(base, name, sizes[label], shard_size)
            how = "reused (built earlier)" if b["reused"] else f"built in {b['wall_s']:.1f} s"
            print(f"ui_pages: {label}: {sizes[label]} documents, shard size {shard_size} -> {b['shards']} shards, "
                  f"{b['published']} published, pipeline {b['pipeline_s']} s (peak RSS {b['peak_rss_mb']} MB), {how}; "
                  f"storage {_storage_bytes(base, name) / 1e6:.1f} MB", flush=True)
        results = measure(base, names, repeats)
        print(f"\nui_pages: GET through TestClient on create_app (no auth), 1 warm-up + median of {repeats} "
              f"(interleaved small/large), run {RUN_ID!r}")
        head = f"{'page':<42} {'small ' + str(small):>22} {'bytes':>9} {'large ' + str(large):>22} {'bytes':>9} {'large/small':>11} {'< 1 s':>6}"
        print(head)
        print("-" * len(head))
        for page in PAGES:
            s, l = results["small"][page], results["large"][page]
            ms, ml = statistics.median(s["times"]), statistics.median(l["times"])
            flag = "yes" if ml < TARGET_S else "NO"
            status = "" if s["status"] == l["status"] == 200 else f"  (HTTP {s['status']} / {l['status']})"
            rng = lambda r: f"{_fmt_s(statistics.median(r['times']))} ({min(r['times']) * 1000:.0f}-{max(r['times']) * 1000:.0f})"
            print(f"{page:<42} {rng(s):>22} {s['bytes']:>9} {rng(l):>22} {l['bytes']:>9} {ml / ms:>10.2f}x {flag:>6}{status}")
        run_page = "/dags/{dag}/runs/{run}"
        ml = statistics.median(results["large"][run_page]["times"])
        print(f"\nui_pages: the large run's page ({large} documents) answers in {_fmt_s(ml)}: "
              f"{'< 1 s (target met)' if ml < TARGET_S else '>= 1 s (target MISSED)'}; slowest large page "
              f"{_fmt_s(max(statistics.median(results['large'][p]['times']) for p in PAGES))}")
        if do_profile:
            profile(base, names["large"])
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        _build_child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SMALL} vs {QUICK_LARGE} documents")
    ap.add_argument("--small", type=int, default=None, help=f"documents of the small run (default {SMALL})")
    ap.add_argument("--large", type=int, default=None, help=f"documents of the large run (default {LARGE})")
    ap.add_argument("--shard-size", type=int, default=None, help=f"rows per shard, both runs (default large / {SHARDS})")
    ap.add_argument("--repeats", type=int, default=REPEATS, help=f"measured requests per page, median reported (default {REPEATS})")
    ap.add_argument("--root", default=None, help="build into this folder and keep it (reuses runs already built there)")
    ap.add_argument("--profile", action="store_true", help="cProfile what each large-run page's route calls")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    ui_pages(a.small or (QUICK_SMALL if a.quick else SMALL), a.large or (QUICK_LARGE if a.quick else LARGE),
             a.shard_size, a.repeats, a.root, a.profile)
