"""load: a 100 k-document run through every post-generation stage under the real scheduler, wall time and
peak memory per task (goal: no task over 2 GiB).

One corpus spec (``loadbench``: the demo's seeds, templates, decontamination references and canaries;
``documents`` = 100 000 by default, ``--quick`` 5 000; judge off) is run by ``synthcorpus.deploy.Stack``
(scheduler, dag-processor, triggerer, api-server, Celery worker on PostgreSQL + Redis) in a temporary
AIRFLOW_HOME with its own PostgreSQL database, Celery queue and ports; the run is triggered through the
REST API (``/api/v2``) and the database dropped afterwards.

Generation is prepared, not run by an LLM. Before the stack starts, a child process runs the pipeline's own
stages in-process up to ``plan_shards`` (history, seeds, topics, prompts, plan_shards; wall time and peak of each
reported apart: VmHWM reset with /proc/self/clear_refs before each) and then every
``generate`` shard with a fast fake engine (:class:`LoadEngine`) passed as the run's engine -- the real
``generate`` stage and ``stages.contract.execute``: the same shard files, budget entries and committed
markers with valid fingerprints as a real generation. The DAG run uses the same storage, spec file and run
name, so its tasks up to ``generate`` find their markers committed and skip (they still run as tasks, which
take seconds each: shown apart), and every stage after it -- filter_shard, judge (a pass-through: judge
off), dedup, minhash_signatures, near_dedup, decontaminate, top_up, validate_shard, quality_gate, publish,
summary -- does its real work in Celery task processes.

The fake engine's documents (a pure function of prompt and seed): words from a Zipf-like vocabulary whose
top ranks are English function words (``quality_bench.vocabulary``: language id says ``en``, the Gopher rules
pass), 70-1 500 words (log-normal, median ~250), sentences of 6-22 words in paragraphs of 2-7 sentences.
Planted, by a hash of prompt and seed: ~4 % near-copies of a shared template (1 word in ~60 replaced, 30 %
also a paragraph moved; ~3 per template), ~1 % exact copies up to case and spacing (~3 per template),
0.5 % too short, 0.3 % refusals, 0.5 % repetitive (a paragraph repeated), 0.5 % truncated
(``finish_reason: length``), 0.2 % French, 0.02 % with a benchmark item of ``demo_benchmark.jsonl``
pasted in (decontaminate removes them; the demo's 6 canaries are planted by the stage itself).
``generation.max_attempts: 1``: the generator keeps a row that fails validation (``status: failed``, its
reason in the generate stats), so every planted defect reaches filter_shard (removed as ``generation_failed``). ``refresh.expected_yield: 0.9`` over-provisions (~111 k
prompts for 100 k documents) and ``refresh.top_up_rounds: 0``: top_up trims the surplus and never
generates (a top-up round would load the real model in the task).

Wall time per task: ``end_date - start_date`` of its task instance (REST API). Peak memory per task: the
task process's VmHWM (the kernel's RSS high-water mark, /proc/PID/status), sampled every 50 ms by a
thread of this process over the Celery worker's process tree (/proc/PID/task/*/children). Airflow 3's
supervisor forks one task process per try and the task runner names it ``airflow worker -- <ti id>``
(setproctitle), which is the ``id`` of the task instance in the REST API: the process is matched to its
task instance exactly. VmHWM never decreases, so a sample taken after the peak reads the peak; only growth
in the last < 50 ms before the process exits can be missed (after the stage returns, the task runner still
pushes XCom, runs listeners and flushes logs). The RSS counts pages shared with the forking worker (the
task starts at its RSS, ~200 MiB; "start" in the JSON), so it over- rather than under-states the task's
own memory. Processes the task process forks (OpenLineage's listener forks one per event) or spawns are
reported apart (``children_peak_mb``).

Run: .venv/bin/python benchmarks/run.py load          (100 k documents; opt-in: not in `make bench`; on 2 cores
                                                       ~18 min: 6 preparing, 12 the run; ~50 min when others'
                                                       work shares the cores)
     .venv/bin/python benchmarks/load.py --quick      (5 k documents, ~10 min: the same 56 shards, so the same
                                                       292 tasks)
     .venv/bin/python benchmarks/load.py [--documents N] [--shard-size N] [--jobs N] [--keep DIR] [--out FILE]
Results: a table on stdout and JSON in .artifacts/bench/load-<N>.json (every task instance). Exit status 1
when the run failed or a task went over the limit (the standalone command only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from synthcorpus.engines import Completion, Engine

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
INCLUDE = ROOT / "include"
DOCUMENTS, QUICK_DOCUMENTS = 100_000, 5_000
SHARDS = 50  # default shard size = documents / SHARDS (2 000 prompts per shard at 100 k: 56 shards)
LIMIT_MB = 2048.0
SAMPLE_S = 0.05
NAME = "loadbench"
TITLE = "airflow worker -- "  # the task process's title (airflow.sdk.execution_time.task_runner.startup)
PREPARED = ("history", "seeds", "topics", "prompts", "plan_shards", "generate")  # committed before the DAG runs
STORAGE_ENV = "SYNTHCORPUS_STORAGE_URI"

# The planted share of each kind of document (by a hash of prompt and seed); the rest are plain documents.
ROLES = (("near_copy", 0.04), ("exact_copy", 0.01), ("too_short", 0.005), ("refusal", 0.003),
         ("repetitive", 0.005), ("truncated", 0.005), ("french", 0.002), ("contaminated", 0.0002))
COPIES_PER_TEMPLATE = 3
FRENCH = (
    "Les abeilles visitent les fleurs du jardin chaque matin pour récolter le nectar",
    "Le village se trouve au bord de la rivière et les enfants y jouent souvent après l'école",
    "Nous avons appris que la lumière du soleil met environ huit minutes pour arriver jusqu'à nous",
    "Cette histoire raconte la vie d'un gardien de phare qui attendait le retour des bateaux",
    "Il faut mélanger la farine avec le beurre avant d'ajouter le sucre et les oeufs",
    "Les élèves doivent lire le chapitre suivant et répondre aux questions pour la semaine prochaine",
    "Pendant l'hiver, la neige couvre les montagnes et les routes deviennent difficiles",
    "Le professeur explique que les plantes ont besoin d'eau, de lumière et de dioxyde de carbone",
    "On dit que la ville a beaucoup changé depuis que la nouvelle gare a été construite",
    "Mon grand-père racontait des histoires sur la guerre et sur les années passées à la campagne",
    "Les chercheurs ont observé que les oiseaux migrateurs suivent le champ magnétique de la terre",
    "Quand il pleut, nous restons à la maison et nous jouons aux cartes avec nos voisins",
)


# ----------------------------------------------------------------------------------------- the fake engine


class LoadEngine(Engine):
    """A fast fake engine: one synthetic document per (prompt, seed), ~0.3 ms each (~3 000 docs/s); counts the
    documents it wrote per planted role (``roles``). ``n`` (the prompts to generate) sizes the template pools
    so that each near-copy or exact-copy template is used ~COPIES_PER_TEMPLATE times."""

    name = "load-fake"

    def __init__(self, n: int, benchmark: Path = INCLUDE / "seeds" / "demo_benchmark.jsonl"):
        import numpy as np

        from quality_bench import vocabulary

        self.np = np
        self.vocab = vocabulary(20_000)
        w = 1.0 / (np.arange(len(self.vocab)) + 10.0)
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        share = dict(ROLES)
        self.templates = {"near_copy": max(1, round(n * share["near_copy"] / COPIES_PER_TEMPLATE)),
                          "exact_copy": max(1, round(n * share["exact_copy"] / COPIES_PER_TEMPLATE))}
        self.items = [f"{r['question']} {r['choices']}" for r in
                      (json.loads(line) for line in benchmark.read_text().splitlines() if line.strip())]
        self.roles: Counter[str] = Counter()

    # -- text ---------------------------------------------------------------------------------------------
    def _words(self, key: str, n: int | None = None) -> list[str]:
        np = self.np
        rng = np.random.Generator(np.random.PCG64(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")))
        if n is None:
            n = int(min(1500, max(70, rng.lognormal(np.log(250), 0.55))))
        ids = np.searchsorted(self.cdf, rng.random(n), side="right")
        v = self.vocab
        return [v[i] for i in ids.tolist()]

    @staticmethod
    def _render(words: list[str], key: str) -> str:
        """Sentences of 6-22 words, paragraphs of 2-7 sentences; the layout is a function of ``key``."""
        rng = random.Random(key)
        paragraphs, sentences, i = [], [], 0
        per_paragraph = rng.randint(2, 7)
        while i < len(words):
            k = rng.randint(6, 22)
            s = words[i:i + k]
            i += k
            sentences.append(s[0].capitalize() + (" " + " ".join(s[1:]) if len(s) > 1 else "") + ".")
            if len(sentences) == per_paragraph:
                paragraphs.append(" ".join(sentences))
                sentences, per_paragraph = [], rng.randint(2, 7)
        if sentences:
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs)

    def document(self, prompt: str, seed: int) -> tuple[str, str, str]:
        """(role, text, finish_reason) of one request."""
        key = f"{prompt}|{seed}"
        h = hashlib.blake2b(key.encode(), digest_size=16).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        pick = int.from_bytes(h[8:], "big")
        role, edge = "plain", 0.0
        for name, share in ROLES:
            edge += share
            if u < edge:
                role = name
                break
        finish = "stop"
        if role == "near_copy":
            t = f"near-{pick % self.templates['near_copy']}"
            words = self._words(t)
            rng = random.Random(key)
            for j in rng.sample(range(len(words)), max(1, len(words) // 60)):
                words[j] = self.vocab[rng.randrange(len(self.vocab))]
            text = self._render(words, t)
            if rng.random() < 0.3:  # a paragraph moved
                paras = text.split("\n\n")
                text = "\n\n".join(paras[1:] + paras[:1])
        elif role == "exact_copy":
            t = f"exact-{pick % self.templates['exact_copy']}"
            text = self._render(self._words(t), t)
            if pick % 2:  # the same text up to case and spacing (what the exact hash normalizes away)
                text = text.replace(". ", ".  ", 3).upper()
        elif role == "too_short":
            text = self._render(self._words(key, 10 + pick % 30), key)
        elif role == "refusal":
            text = "I'm sorry, but I cannot help with that request. " + self._render(self._words(key), key)
        elif role == "repetitive":
            para = self._render(self._words(key, 60), key)
            text = "\n\n".join([para] * 6)
        elif role == "french":
            rng = random.Random(key)
            text = ". ".join(rng.sample(FRENCH, rng.randint(7, len(FRENCH)))) + "."  # no sentence twice
        elif role == "contaminated":
            paras = self._render(self._words(key), key).split("\n\n")
            paras.insert(len(paras) // 2, self.items[pick % len(self.items)])
            text = "\n\n".join(paras)
        else:
            text = self._render(self._words(key), key)
            if role == "truncated":
                finish = "length"
        return role, text, finish

    # -- the engine interface -----------------------------------------------------------------------------
    def generate(self, prompt, params, seed):
        role, text, finish = self.document(prompt, seed)
        self.roles[role] += 1
        return Completion(text, finish, len(prompt.split()), int(len(text.split()) * 1.3), 0.0)

    def model_info(self) -> dict:
        return {"engine": "fake", "model": "load-fake", "model_file": "load-fake", "model_sha256": "0" * 64, "model_bytes": 0}


# --------------------------------------------------------------------------------------------------- spec


def spec_dict(documents: int, shard_size: int) -> dict:
    """The demo corpus (include/corpora/demo.yaml) at ``documents``, its paths absolute, judge off, gate bounds
    that the planted defects stay within."""
    import yaml

    demo = yaml.safe_load((INCLUDE / "corpora" / "demo.yaml").read_text())
    seeds = INCLUDE / "seeds"
    spec = {
        "name": NAME,
        "description": f"load benchmark: {documents} documents from a fast fake engine (benchmarks/load.py)",
        "schedule": None,
        "documents": documents,
        "seeds": {"outline": str(seeds / "demo_outline.yaml"),
                  "web_samples": {**demo["seeds"]["web_samples"], "path": str(seeds / "demo_web_samples.jsonl")},
                  "instructions": {**demo["seeds"]["instructions"], "path": str(seeds / "demo_instructions.jsonl")}},
        "topics": {**demo["topics"], "labeler": "keywords"},
        "prompts": {**demo["prompts"], "template_dir": str(INCLUDE / "prompts")},
        # llamacpp is never loaded: every generate shard is committed before the DAG runs.
        "generation": {**demo["generation"], "shard_size": shard_size, "max_attempts": 1, "checkpoint_rows": 1000},
        "quality": {**demo["quality"], "max_filtered_share": 0.3, "max_duplicate_rate": 0.1, "max_contaminated": 1000,
                    "decontamination": {**demo["quality"]["decontamination"],
                                        "references": [{**r, "path": str(seeds / Path(r["path"]).name)}
                                                       for r in demo["quality"]["decontamination"]["references"]],
                                        "canaries": str(seeds / "demo_canaries.jsonl")}},
        "judge": {"enabled": False},
        "refresh": {**demo["refresh"], "expected_yield": 0.9, "top_up_rounds": 0},
        "publish": {**demo["publish"], "approval": {"required": False}},
    }
    return spec


# ------------------------------------------------------------------------------- preparing the generation


def _prepare_child(spec_path: str, run_id: str, jobs: str = "2") -> None:
    """In a child process (its own peak): the stages before generate, then every generate shard with the fake
    engine, each committed through ``stages.contract.execute`` exactly as the DAG's tasks would commit it
    (``jobs`` processes, each taking every jobs-th shard: the generator's own validation, language id and the
    Gopher rules on every row, is most of the time)."""
    import multiprocessing
    import resource

    sys.path.insert(0, str(BENCH))
    from synthcorpus.stages import TABLE
    from synthcorpus.stages.contract import execute, open_run, shards, stats

    t0 = time.perf_counter()
    run = open_run(spec_path, run_id)
    stages: dict[str, dict] = {}
    for stage in TABLE[:TABLE.index(next(s for s in TABLE if s.name == "generate"))]:
        # Each stage's own peak in this process: VmHWM reset to the current RSS before it (clear_refs 5).
        Path("/proc/self/clear_refs").write_text("5")
        before, started = _status_kb(os.getpid())["VmRSS"] / 1024, time.perf_counter()
        execute(run, stage.name)
        peak = _status_kb(os.getpid())["VmHWM"] / 1024
        stages[stage.name] = {"wall_s": round(time.perf_counter() - started, 1), "rss_before_mb": round(before),
                              "peak_mb": round(peak), "growth_mb": round(peak - before)}
    t1 = time.perf_counter()
    indexes, n = shards(run), stats(run, "plan_shards")["prompts"]
    jobs_n = max(1, min(int(jobs), len(indexes)))
    work = [(spec_path, run_id, n, indexes[j::jobs_n]) for j in range(jobs_n)]
    with multiprocessing.get_context("fork").Pool(jobs_n) as pool:
        parts = pool.map(_generate_shards, work)
    t2 = time.perf_counter()
    roles: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for part in parts:
        roles.update(part["roles"])
        reasons.update(part["attempt_reasons"])
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_generate_s": round(t1 - t0, 1), "stages": stages, "generate_s": round(t2 - t1, 1), "jobs": jobs_n,
                      "shards": sum(p["shards"] for p in parts), "generated": sum(p["rows"] for p in parts),
                      "failed": sum(p["failed"] for p in parts), "roles": dict(roles), "attempt_reasons": dict(reasons),
                      "peak_rss_mb": round(self_peak),  # the stages before generate
                      "generate_peak_rss_mb": round(max(p["peak_rss_mb"] for p in parts))}))  # forked after them


def _generate_shards(work: tuple[str, str, int, list[int]]) -> dict:
    """One preparing process: these generate shards of the run, with the fake engine as the run's engine."""
    import resource

    from synthcorpus.stages.contract import execute, open_run

    spec_path, run_id, n, indexes = work
    engine = LoadEngine(n)
    run = open_run(spec_path, run_id, engine=engine)
    done = [execute(run, "generate", i)["stats"] for i in indexes]
    reasons: Counter[str] = Counter()
    for s in done:
        reasons.update(s.get("attempt_reasons") or {})
    return {"shards": len(done), "rows": sum(s["rows"] for s in done), "failed": sum(s["failed"] for s in done),
            "roles": dict(engine.roles), "attempt_reasons": dict(reasons),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def prepare(spec_path: Path, run_id: str, storage_uri: str, log: Path, jobs: int = 2) -> dict:
    env = {**os.environ, STORAGE_ENV: storage_uri, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as err:
        out = subprocess.run([sys.executable, __file__, "_prepare", str(spec_path), run_id, str(jobs)], env=env, stdout=subprocess.PIPE,
                             stderr=err, text=True)
    if out.returncode:
        raise RuntimeError(f"preparing the generation failed (exit {out.returncode}); its log ({log}) ends:\n"
                           + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- memory of task processes


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent PID, start time in clock ticks) from /proc/PID/stat."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), fields[19]


def _status_kb(pid: int) -> dict[str, int]:
    text = _read(f"/proc/{pid}/status") or ""
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


class TaskMemory(threading.Thread):
    """Samples every ``every_s`` the processes under ``root_pid`` (the Celery worker): a process titled
    ``airflow worker -- <ti id>`` is a task process; its VmHWM (peak RSS) and VmRSS are recorded per sample,
    the highest kept. A titled process whose parent carries the same title (OpenLineage forks the task
    process) and any other descendant of a task process count as that task's children."""

    def __init__(self, root_pid: int, every_s: float = SAMPLE_S):
        super().__init__(daemon=True, name="task-memory")
        self.root, self.every_s = root_pid, every_s
        self.procs: dict[tuple[int, str], dict] = {}  # (pid, start time) -> what was seen
        self.ticks = 0
        self.tick_s = 0.0
        self.load: list[float] = []  # 1-minute load average, sampled
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.perf_counter()
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - never let the sampler die silently mid-run
                print(f"load: memory sampler: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.ticks += 1
            self.tick_s += time.perf_counter() - started
            if self.ticks % 200 == 1:  # every ~10 s: how busy the machine is (other users' work included)
                self.load.append(os.getloadavg()[0])
            self._halt.wait(self.every_s)

    def _descendants(self) -> list[int]:
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                for child in (_read(f"/proc/{pid}/task/{tid}/children") or "").split():
                    out.append(int(child))
                    todo.append(int(child))
        return out

    def sample(self) -> None:
        now = time.time()
        live: dict[int, tuple[int, str]] = {}  # pid -> key, this sample (parents come before their children)
        for pid in self._descendants():
            st = _stat(pid)
            if st is None:
                continue
            ppid, start = st
            key = live[pid] = (pid, start)
            seen = self.procs.get(key)
            if seen is None:
                seen = self.procs[key] = {"pid": pid, "parent": live.get(ppid), "ti": None, "owner": None, "first": now,
                                          "hwm_kb": 0, "rss_kb": 0, "start_kb": None, "ignore": False}
            if seen["ignore"]:
                continue
            if seen["owner"] is None:
                if seen["ti"] is None:
                    cmdline = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
                    if cmdline.startswith(TITLE):
                        seen["ti"] = cmdline[len(TITLE):].split()[0]
                parent = self.procs.get(seen["parent"])
                if parent is not None and parent["owner"] is not None:
                    seen["owner"] = parent["owner"]  # forked or spawned by a task process: its child
                elif seen["ti"] is not None:
                    seen["owner"] = key  # the task process itself
                elif now - seen["first"] > 30:
                    seen["ignore"] = True  # the worker's own processes (pool children), never retitled
                    continue
                else:
                    continue  # forked by the worker, not titled yet
            kb = _status_kb(pid)
            if not kb:
                continue
            if seen["start_kb"] is None:
                seen["start_kb"] = kb.get("VmRSS", 0)
            seen["hwm_kb"] = max(seen["hwm_kb"], kb.get("VmHWM", 0))
            seen["rss_kb"] = max(seen["rss_kb"], kb.get("VmRSS", 0))
            seen["last"] = now

    def by_ti(self) -> dict[str, dict]:
        """ti id -> {peak_mb: the task process's VmHWM, start_mb: its RSS when first sampled, max_rss_mb,
        children, children_peak_mb: the highest VmHWM of its descendants, first / last: sample times}."""
        out: dict[str, dict] = {}
        for key, p in self.procs.items():
            if p["owner"] is None or "last" not in p:
                continue
            ti = self.procs[p["owner"]]["ti"]
            entry = out.setdefault(ti, {"peak_mb": 0.0, "start_mb": None, "max_rss_mb": 0.0, "children": 0,
                                        "children_peak_mb": 0.0, "first": p["first"], "last": p["last"]})
            if p["owner"] == key:
                entry.update(peak_mb=p["hwm_kb"] / 1024, max_rss_mb=p["rss_kb"] / 1024, start_mb=(p["start_kb"] or 0) / 1024,
                             first=p["first"], last=p["last"])
            else:
                entry["children"] += 1
                entry["children_peak_mb"] = max(entry["children_peak_mb"], p["hwm_kb"] / 1024)
        return out


# -------------------------------------------------------------------------------------------- the stack run


def _iso(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def run_on_stack(base: Path, corpora: Path, spec, run_id: str, storage_uri: str, timeout_s: float) -> dict:
    from synthcorpus.deploy import Stack, drop_database
    from tests.airflow_api import AirflowAPI
    from tests.integration.conftest import _ports

    tag = f"{os.getpid()}_{random.randint(0, 999_999)}"
    api_port, worker_log, trigger_log = _ports(3)
    stack = Stack(home=base / "airflow", project_dir=ROOT, api_port=api_port, worker_log_port=worker_log,
                  trigger_log_port=trigger_log, queue=f"load_{tag}",
                  sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_load_{tag}",
                  env={"SYNTHCORPUS_CORPORA_DIR": str(corpora), STORAGE_ENV: storage_uri})
    sampler = None
    try:
        t0 = time.perf_counter()
        stack.up(say=lambda *_: None)
        up_s = time.perf_counter() - t0
        api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
        api.wait_for_dag(spec.dag_id, 300)
        api.unpause(spec.dag_id)
        sampler = TaskMemory(stack.owned("celery-worker"))
        sampler.start()
        started = time.perf_counter()
        dag_run = api.trigger(spec.dag_id, {"run_name": run_id})
        print(f"load: triggered {spec.dag_id} run {dag_run} (storage run {run_id}); Airflow home {stack.home}", flush=True)
        run = _wait_run(api, spec.dag_id, dag_run, timeout_s)
        total_s = time.perf_counter() - started
        time.sleep(3 * SAMPLE_S)
        sampler.stop()
        tis = api.task_instances(spec.dag_id, dag_run)
        tries = []
        for ti in tis:  # earlier tries of retried tasks have task instance ids of their own
            if (ti.get("try_number") or 1) > 1:
                tries += [t for t in api.tries(spec.dag_id, dag_run, ti["task_id"], ti["map_index"]) if t.get("id") != ti.get("id")]
        return {"state": run["state"], "total_s": total_s, "stack_up_s": up_s, "tis": tis, "earlier_tries": tries,
                "memory": sampler.by_ti(), "sampler": {"every_s": sampler.every_s, "ticks": sampler.ticks,
                                                       "mean_tick_ms": 1000 * sampler.tick_s / max(1, sampler.ticks)},
                "load_average": {"mean": round(statistics.mean(sampler.load), 1) if sampler.load else None,
                                 "max": round(max(sampler.load), 1) if sampler.load else None},
                "airflow_home": str(stack.home), "dag_run": dag_run, "slots": stack.worker_concurrency}
    finally:
        try:
            if sampler is not None:
                sampler.stop()
        finally:
            try:
                stack.down(say=lambda *_: None)
            finally:
                drop_database(stack.sql_alchemy_conn)


def _wait_run(api, dag_id: str, dag_run: str, timeout_s: float) -> dict:
    """Poll the run until it ends; print progress (task instances per state) at most once a minute."""
    deadline = time.monotonic() + timeout_s
    last = 0.0
    while True:
        run = api.dag_run(dag_id, dag_run)
        if run["state"] in ("success", "failed"):
            return run
        if time.monotonic() - last > 60:
            last = time.monotonic()
            tis = api.task_instances(dag_id, dag_run)
            running = sorted({t["task_id"] for t in tis if t["state"] == "running"})
            counts = Counter(t["state"] or "none" for t in tis)
            print(f"load: {time.strftime('%H:%M:%S')} {dict(counts)}; running: {', '.join(running) or '-'}", flush=True)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {dag_run} did not finish in {timeout_s:.0f}s")
        time.sleep(5)


# ------------------------------------------------------------------------------------------------ results


def task_rows(stack: dict) -> list[dict]:
    """One row per task instance (last try): wall time, peak memory, state."""
    rows = []
    for ti in stack["tis"]:
        mem = stack["memory"].get(ti.get("id") or "", {})
        start, end = _iso(ti.get("start_date")), _iso(ti.get("end_date"))
        queued = _iso(ti.get("queued_when"))
        rows.append({"task": ti["task_id"], "map_index": ti["map_index"], "state": ti["state"], "try": ti.get("try_number"),
                     "ti_id": ti.get("id"), "start": ti.get("start_date"), "end": ti.get("end_date"),
                     "wall_s": round(end - start, 3) if start and end else None,
                     "queued_s": round(start - queued, 3) if start and queued else None,
                     "peak_mb": round(mem["peak_mb"], 1) if mem else None,
                     "start_mb": round(mem["start_mb"], 1) if mem and mem.get("start_mb") is not None else None,
                     "children": mem.get("children", 0), "children_peak_mb": round(mem.get("children_peak_mb", 0.0), 1),
                     "sampled_s": round(mem["last"] - mem["first"], 2) if mem else None})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """One row per task id, in the DAG's order: instances, wall time (total / median / max over map indexes),
    peak memory (max / median)."""
    from synthcorpus.stages import TABLE

    order = [s.name for s in TABLE]
    out = []
    for task in sorted({r["task"] for r in rows}, key=lambda t: order.index(t) if t in order else len(order)):
        mine = [r for r in rows if r["task"] == task]
        walls = [r["wall_s"] for r in mine if r["wall_s"] is not None]
        peaks = [r["peak_mb"] for r in mine if r["peak_mb"] is not None]
        starts = [r["start_mb"] for r in mine if r["start_mb"] is not None]
        out.append({"task": task, "instances": len(mine), "states": dict(Counter(r["state"] for r in mine)),
                    "prepared": task in PREPARED,
                    "wall_total_s": round(sum(walls), 1), "wall_median_s": round(statistics.median(walls), 2) if walls else None,
                    "wall_max_s": round(max(walls), 2) if walls else None,
                    "peak_max_mb": round(max(peaks), 1) if peaks else None,
                    "peak_median_mb": round(statistics.median(peaks), 1) if peaks else None,
                    "start_median_mb": round(statistics.median(starts), 1) if starts else None,
                    "unmeasured": len(mine) - len(peaks),
                    "children_peak_mb": max((r["children_peak_mb"] for r in mine), default=0.0)})
    return out


def table(summary: list[dict]) -> str:
    lines = ["| task | instances | wall s (max per instance) | wall s (all instances) | peak MiB (max) | peak MiB (median) | "
             "RSS at start MiB | note |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        note = []
        if s["prepared"]:
            note.append("committed before the run: skips")
        if s["peak_max_mb"] is not None and s["peak_max_mb"] > LIMIT_MB:
            note.append("**OVER 2 GiB**")
        if s["unmeasured"]:
            note.append(f"{s['unmeasured']} not sampled")
        if set(s["states"]) != {"success"}:
            note.append(", ".join(f"{k}: {v}" for k, v in s["states"].items()))
        peak = f"{s['peak_max_mb']:.0f}" if s["peak_max_mb"] is not None else "—"
        median = f"{s['peak_median_mb']:.0f}" if s["peak_median_mb"] is not None else "—"
        start = f"{s['start_median_mb']:.0f}" if s["start_median_mb"] is not None else "—"
        lines.append(f"| {s['task']} | {s['instances']} | {s['wall_max_s']} | {s['wall_total_s']} | {peak} | {median} | "
                     f"{start} | {'; '.join(note)} |")
    return "\n".join(lines)


def _phase(rows: list[dict], tasks: set[str]) -> float | None:
    spans = [(_iso(r["start"]), _iso(r["end"])) for r in rows if r["task"] in tasks and r["start"] and r["end"]]
    return round(max(e for _, e in spans) - min(s for s, _ in spans), 1) if spans else None


def load(documents: int = DOCUMENTS, shard_size: int | None = None, keep: str | None = None, out: str | None = None,
         timeout_s: float = 4 * 3600, jobs: int = 2) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCH))
    from synthcorpus.spec import load_spec
    from synthcorpus.stages import TABLE
    from tests.conftest import write_spec

    shard_size = shard_size or max(1, documents // SHARDS)
    tmp = None
    if keep:
        base = Path(keep).resolve()
        if base.exists() and any(base.iterdir()):
            raise SystemExit(f"--keep {base}: expected an empty or new folder")
        base.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="synthcorpus-load-")
        base = Path(tmp)
    try:
        corpora = base / "corpora"
        corpora.mkdir()
        spec_path = write_spec(corpora, spec_dict(documents, shard_size)).resolve()
        spec = load_spec(spec_path)
        storage_uri = (base / "storage").as_uri()
        run_id = f"load-{documents}"
        print(f"load: {documents} documents, shards of {shard_size}; preparing generation (fake engine) in {base}", flush=True)
        t0 = time.perf_counter()
        prep = prepare(spec_path, run_id, storage_uri, base / "prepare.log", jobs)
        prep["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"load: prepared {prep['generated']} generated documents in {prep['shards']} shards in {prep['wall_s']} s "
              f"(stages before generate {prep['before_generate_s']} s, generate {prep['generate_s']} s in {prep['jobs']} "
              f"processes); planted: {prep['roles']}", flush=True)
        print("load: stages before generate, in-process (not under the scheduler; peak = VmHWM reset before each): "
              + ", ".join(f"{k} {v['wall_s']} s, peak {v['peak_mb']} MiB (+{v['growth_mb']})" for k, v in prep["stages"].items()),
              flush=True)
        stack = run_on_stack(base, corpora, spec, run_id, storage_uri, timeout_s)
        rows = task_rows(stack)
        summary = summarize(rows)
        post = {s.name for s in TABLE} - set(PREPARED)
        over = [r for r in rows if r["peak_mb"] is not None and r["peak_mb"] > LIMIT_MB]
        counts = _counts(storage_uri, spec, run_id)
        result = {
            "documents": documents, "shard_size": shard_size, "state": stack["state"], "run_wall_s": round(stack["total_s"], 1),
            "post_generation_wall_s": _phase(rows, post), "prepared_tasks_wall_s": _phase(rows, set(PREPARED)),
            "stack_up_s": round(stack["stack_up_s"], 1), "worker_concurrency": stack["slots"], "prepare": prep,
            "limit_mb": LIMIT_MB, "over_limit": over, "sampler": stack["sampler"], "counts": counts,
            "load_average": stack["load_average"],
            "cores": len(os.sched_getaffinity(0)), "summary": summary, "task_instances": rows,
            "earlier_tries": stack["earlier_tries"], "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        out_path = Path(out) if out else ROOT / ".artifacts" / "bench" / f"load-{documents}.json"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, default=str))
        _print(result, out_path)
        return result
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _counts(storage_uri: str, spec, run_id: str) -> dict:
    """What the stages did, from their committed markers (documents in and out, removed per reason)."""
    os.environ[STORAGE_ENV] = storage_uri
    from synthcorpus.stages.contract import RunContext, results, stats

    run = RunContext.create(spec, run_id)
    filt = results(run, "filter_shard", required=False)
    reasons: Counter[str] = Counter()
    for m in filt:
        reasons.update({k: v for k, v in m["stats"].get("reasons", {}).items() if v})
    out = {"generated": sum(m["stats"]["rows"] for m in results(run, "generate", required=False)),
           "filter_kept": sum(m["stats"]["kept"] for m in filt), "filter_removed": dict(reasons)}
    for stage in ("dedup", "near_dedup", "decontaminate"):
        s = stats(run, stage)
        out[stage] = {k: s.get(k) for k in ("input", "kept", "removed", "clusters", "canaries_caught", "canaries_planted") if k in s}
    top = stats(run, "top_up")
    out["top_up"] = {k: top.get(k) for k in ("documents", "surplus", "shortfall", "rounds")}
    out["published"] = stats(run, "publish").get("rows")
    return out


def _print(result: dict, out_path: Path) -> None:
    print(table(result["summary"]))
    prep = result["prepare"]
    print(f"load: run {result['state']} in {result['run_wall_s']} s (trigger -> end); post-generation stages "
          f"{result['post_generation_wall_s']} s (first filter_shard start -> summary end); the prepared tasks (skips) "
          f"{result['prepared_tasks_wall_s']} s; generation prepared beforehand in {prep['wall_s']} s (not in the run); "
          f"stack up {result['stack_up_s']} s; worker concurrency {result['worker_concurrency']}, {result['cores']} cores, "
          f"1-min load average during the run {result['load_average']['mean']} (max {result['load_average']['max']})")
    print(f"load: counts {json.dumps(result['counts'])}")
    s = result["sampler"]
    print(f"load: memory = VmHWM of each task process, sampled every {1000 * s['every_s']:.0f} ms ({s['ticks']} samples, "
          f"{s['mean_tick_ms']:.1f} ms each)")
    if result["over_limit"]:
        print("load: OVER 2 GiB: " + ", ".join(f"{r['task']}[{r['map_index']}] {r['peak_mb']:.0f} MiB" for r in result["over_limit"]))
    else:
        peak = max((r["peak_mb"] for r in result["task_instances"] if r["peak_mb"] is not None), default=0)
        print(f"load: no task over 2 GiB (highest {peak:.0f} MiB)")
    print(f"load: JSON in {out_path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--documents", type=int, default=DOCUMENTS)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_DOCUMENTS} documents")
    p.add_argument("--shard-size", type=int, default=None, help=f"prompts per generate shard (default documents / {SHARDS})")
    p.add_argument("--keep", default=None, help="build in this (new) folder and keep it: storage, Airflow home and logs")
    p.add_argument("--out", default=None, help="the JSON (default .artifacts/bench/load-<N>.json)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds the DAG run may take")
    p.add_argument("--jobs", type=int, default=2, help="processes preparing the generate shards (before the run)")
    a = p.parse_args(argv)
    result = load(QUICK_DOCUMENTS if a.quick else a.documents, a.shard_size, a.keep, a.out, a.timeout, a.jobs)
    return 0 if result["state"] == "success" and not result["over_limit"] else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(BENCH))
    if sys.argv[1:2] == ["_prepare"]:
        _prepare_child(*sys.argv[2:5])
    else:
        sys.exit(main())
