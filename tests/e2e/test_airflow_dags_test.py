"""End to end on real Airflow: render airflow.cfg.template into a fresh AIRFLOW_HOME (SQLite), migrate
the metadata DB, and run a tiny corpus with `airflow dags test` on the real bundled model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthcorpus.publish import verify_version
from tests.conftest import ROOT, tiny_spec_dict, write_spec
from tests.unit.test_openlineage import CHAIN, EventValidator, LineageReceiver, lineage_graph, reachable

BIN = Path(sys.executable).parent


class StatsdReceiver:
    """A UDP socket on loopback collecting StatsD packets (what Airflow's stats client sends)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            self.lines.extend(data.decode(errors="replace").splitlines())

    def values(self, name: str) -> list[tuple[str, float]]:
        """(type, value) of every packet for ``name`` (``c`` counter, ``g`` gauge; ``+x`` gauges as deltas)."""
        out = []
        for line in list(self.lines):
            metric, _, rest = line.partition(":")
            if metric == name:
                value, kind = rest.split("|")[:2]
                out.append((kind, float(value)))
        return out

    def total(self, name: str) -> float:
        return sum(v for _, v in self.values(name))

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def statsd():
    receiver = StatsdReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def marquez():
    """A Marquez-shaped OpenLineage receiver on loopback (POST /api/v1/lineage)."""
    receiver = LineageReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, statsd, marquez):
    base = tmp_path_factory.mktemp("e2e")
    corpora = base / "corpora"
    corpora.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(base / "airflow"),
        "PROJECT_DIR": str(ROOT),
        "SYNTHCORPUS_CORPORA_DIR": str(corpora),
        "SYNTHCORPUS_STORAGE_URI": (base / "storage").as_uri(),
        # Airflow's stats client sends to the test's UDP receiver (the tasks' metrics: synthcorpus.observability)
        "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        # One run feeds both OpenLineage checks: the file the tests read and the HTTP receiver (Marquez's API).
        # The extractor comes from airflow.cfg.template ([openlineage] extractors).
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "composite", "continue_on_failure": True, "transports": {
            "file": {"type": "file", "log_file_path": str(base / "airflow" / "openlineage" / "events.jsonl"), "append": True},
            "marquez": {"type": "http", "url": marquez.url, "endpoint": "api/v1/lineage", "timeout": 5},
        }}),
    }
    (base / "airflow" / "openlineage").mkdir(parents=True)
    subprocess.run([BIN / "synthcorpus", "render-config", ROOT / "airflow.cfg.template", base / "airflow" / "airflow.cfg"],
                   env=env, check=True, capture_output=True)
    migrate = subprocess.run([BIN / "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    return base, corpora, env


def dags_test(env, dag_id, run_name, **conf):
    return subprocess.run(
        [BIN / "airflow", "dags", "test", dag_id, "--conf", json.dumps({"run_name": run_name, **conf})],
        env=env, capture_output=True, text=True, timeout=900,
    )


def tiny_events(events: list[dict], corpus: str) -> list[dict]:
    return [e for e in events if e["job"]["name"].startswith(f"synthcorpus_{corpus}.")]


def check_openlineage_datasets(events: list[dict], corpus: Path, run: str, lineage: dict, rows: int) -> None:
    """The extractor's datasets and facets in the provider's events: valid, linked, and equal to storage."""
    events = tiny_events(events, corpus.name)
    validator = EventValidator()
    assert [p for e in events for p in validator.problems(e)] == []
    assert validator.checked["json-schema"] > len(events)  # the provider's Airflow facets and ours
    root = str(corpus)
    node = {s: ("file", f"{root}/versions/{run}" if s == "publish" else f"{root}/runs/{run}/{s}") for s in CHAIN}
    complete = [e for e in events if e["eventType"] == "COMPLETE"]
    for e in complete:
        stage = e["job"]["name"].split(".", 1)[1]
        facet = e["run"]["facets"]["synthcorpus"]
        assert (facet["corpus"], facet["runId"], facet["stage"]) == (corpus.name, run, stage)
        assert facet["specSha256"] == lineage["spec"]["sha256"]
        assert facet["code"]["version"] == lineage["code"]["version"]
        if stage not in ("history", "seeds", "topics", "prompts", "plan_shards"):  # from the generate shards on
            assert facet["model"]["name"] == lineage["model"]["model"]
            assert facet["model"]["revision"] == lineage["model"]["model_sha256"]
        (out,) = e["outputs"]
        assert out["facets"]["schema"]["fields"] and out["outputFacets"]["outputStatistics"]["fileCount"] >= 1, stage
    # the graph rebuilt from the events: seeds -> ... -> the published version, through every stage
    graph = lineage_graph(events)
    for a, b in zip(CHAIN, CHAIN[1:]):
        assert node[b] in graph[node[a]], f"{a} -> {b}"
    assert node["publish"] in reachable(graph, node["seeds"])
    by_stage = {e["job"]["name"].split(".", 1)[1]: e for e in complete}
    version = by_stage["publish"]["outputs"][0]
    assert version["facets"]["version"]["datasetVersion"] == run
    assert version["outputFacets"]["outputStatistics"]["rowCount"] == rows
    # the gate: metrics and one assertion per expectation on the documents it validated
    report = json.loads((corpus / "runs" / run / "quality_gate" / "report.json").read_text())
    (gated,) = [i for i in by_stage["quality_gate"]["inputs"] if (i["namespace"], i["name"]) == node["top_up"]]
    assertions = gated["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"]) for a in assertions] == [(x["expectation"], x["success"]) for x in report["expectations"]]
    assert gated["inputFacets"]["dataQualityMetrics"]["rowCount"] == rows
    # a mapped shard's task: its own shard
    shard_facets = sorted(e["run"]["facets"]["synthcorpus"]["shard"] for e in complete if e["job"]["name"].endswith(".generate"))
    assert shard_facets == [0, 1, 2]


def test_tiny_corpus_runs_end_to_end(airflow_env, statsd, marquez):
    base, corpora, env = airflow_env
    write_spec(corpora, tiny_spec_dict(name="tiny", documents=9, **{"generation.max_tokens": 40, "generation.shard_size": 4}))
    res = dags_test(env, "synthcorpus_tiny", "e2e-1")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "success" in (res.stdout + res.stderr).lower()

    corpus = base / "storage" / "tiny"
    latest = json.loads((corpus / "latest.json").read_text())
    assert latest["version"] == "e2e-1"
    version = corpus / "versions" / "e2e-1"
    manifest = verify_version(version.as_uri())
    lineage = json.loads((version / "lineage.json").read_text())
    table = pq.read_table(version / "data")
    # Published rows, manifest, lineage and the run's own lineage.json agree.
    assert table.num_rows == manifest["rows"] == latest["rows"] == lineage["counts"]["documents"] > 0
    assert lineage == json.loads((corpus / "runs" / "e2e-1" / "lineage.json").read_text())
    # 9 prompts for 9 documents (the tiny spec's yield 1.0); top-up rounds generate more when rows are dropped.
    assert lineage["counts"]["prompts"] == 9 and lineage["counts"]["generated"] >= 9
    assert lineage["counts"]["documents"] + (lineage["counts"]["shortfall"] or 0) == 9
    assert lineage["model"]["model_file"].endswith(".gguf") and len(lineage["model"]["model_sha256"]) == 64
    assert lineage["sampling"]["max_tokens"] == 40
    assert set(table.column("run_id").to_pylist()) == {"e2e-1"}
    assert set(table.column("model").to_pylist()) == {"smollm2-135m-instruct"}

    # OpenLineage: the provider wrote START and COMPLETE events for every task of this run.
    events = [json.loads(line) for line in (base / "airflow" / "openlineage" / "events.jsonl").read_text().splitlines()]
    jobs = Counter((e["eventType"], e["job"]["name"]) for e in events if e["job"]["name"].startswith("synthcorpus_tiny."))
    for task in ("history", "seeds", "topics", "prompts", "plan_shards", "dedup", "top_up", "quality_gate", "publish", "summary"):
        assert jobs[("START", f"synthcorpus_tiny.{task}")] == 1, task
        assert jobs[("COMPLETE", f"synthcorpus_tiny.{task}")] == 1, task
    shards = len(list((corpus / "runs" / "e2e-1" / "plan_shards").glob("shard-*.parquet")))
    assert shards == 3
    check_openlineage_datasets(events, corpus, "e2e-1", lineage, table.num_rows)
    assert jobs[("COMPLETE", "synthcorpus_tiny.generate")] == shards
    assert jobs[("COMPLETE", "synthcorpus_tiny.filter_shard")] == shards
    # The gate validated each document shard (the plan's, plus one per top-up round) in its own mapped task,
    # then the run metrics.
    documents = shards + lineage["counts"]["top_up_rounds"]
    assert jobs[("COMPLETE", "synthcorpus_tiny.validate_shard")] == documents
    report = json.loads((corpus / "runs" / "e2e-1" / "quality_gate" / "report.json").read_text())
    assert [s["shard"] for s in report["shards"]] == [f"shard-{i:05d}" for i in range(documents)]
    assert report["metrics"]["documents"] == table.num_rows and "n_words_p50" in report["metrics"]

    # Every task sent its metrics through Airflow's stats client (StatsD over UDP): they add up to lineage.json.
    metric = "airflow.synthcorpus.tiny."
    assert statsd.total(metric + "generate.completion_tokens") == lineage["counts"]["completion_tokens"] > 0
    assert statsd.total(metric + "filter_shard.documents") == lineage["counts"]["after_filters"] - sum(
        r["kept"] for r in json.loads((corpus / "runs" / "e2e-1" / "top_up" / "_stage.commit.json").read_text())["stats"].get("round_stats", []))
    assert statsd.values(metric + "gate.passed") == [("c", 1.0)]
    assert statsd.values(metric + "publish.rows") == [("g", float(table.num_rows))]
    assert statsd.values(metric + "gate.documents") == [("g", float(table.num_rows))]

    # The same events reached the HTTP receiver, as a Marquez server takes them (POST /api/v1/lineage).
    assert marquez.rejected == []
    key = lambda e: (e["eventType"], e["job"]["name"], e["run"]["runId"])  # noqa: E731
    assert sorted(map(key, tiny_events(marquez.events, "tiny"))) == sorted(map(key, tiny_events(events, "tiny")))

    # Re-running the same run name skips committed shards and republishes nothing new.
    before = {p: p.stat().st_mtime_ns for p in (corpus / "runs" / "e2e-1" / "generate").glob("*.parquet")}
    again = dags_test(env, "synthcorpus_tiny", "e2e-1")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "is committed already" in again.stdout + again.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (corpus / "runs" / "e2e-1" / "generate").glob("*.parquet")}


def test_failing_gate_fails_the_dag_run_and_publishes_nothing(airflow_env, statsd):
    base, corpora, env = airflow_env
    write_spec(corpora, tiny_spec_dict(name="strict", documents=3,
                                       **{"generation.max_tokens": 24, "quality.min_documents": 50}))
    res = dags_test(env, "synthcorpus_strict", "e2e-fail")
    out = res.stdout + res.stderr
    assert "quality gate failed: " in out and "expectation(s) not met" in out
    # The failed-expectations table, in the task log: batch, expectation, column, expected, observed.
    assert any("run_metrics" in line and "documents" in line and ">= 50" in line and "FAILED" in line
               for line in out.splitlines()), out[-3000:]
    assert res.returncode != 0  # the DAG run failed, so `airflow dags test` (and `make demo`) fails
    assert statsd.values("airflow.synthcorpus.strict.gate.failed") == [("c", 1.0)]  # for alerting
    events = [json.loads(line) for line in (base / "airflow" / "openlineage" / "events.jsonl").read_text().splitlines()]
    # Failed once, not retried: a failed gate is not a transient error (the spec's retries are for those).
    assert [e["eventType"] for e in events if e["job"]["name"] == "synthcorpus_strict.quality_gate"] == ["START", "FAIL"]
    assert not any(e["job"]["name"] == "synthcorpus_strict.publish" for e in events)
    # The gate's FAIL event still says what failed, on the documents it validated (from the report it left).
    (fail,) = [e for e in events if e["job"]["name"] == "synthcorpus_strict.quality_gate" and e["eventType"] == "FAIL"]
    assert EventValidator().problems(fail) == [] and fail["outputs"] == []
    (gated,) = [i for i in fail["inputs"] if i["name"].endswith("/strict/runs/e2e-fail/top_up")]
    failed = [a for a in gated["inputFacets"]["dataQualityAssertions"]["assertions"] if not a["success"]]
    assert [(a["assertion"], a["column"]) for a in failed] == [("expect_column_values_to_be_between", "documents")]
    corpus = base / "storage" / "strict"
    assert not (corpus / "versions").exists()
    assert not (corpus / "latest.json").exists()
    report = json.loads((corpus / "runs" / "e2e-fail" / "quality_gate" / "report.json").read_text())
    assert report["passed"] is False
    assert (corpus / "runs" / "e2e-fail" / "quality_gate" / "data_docs" / "index.html").is_file()
    assert json.loads((corpus / "quarantine" / "e2e-fail.json").read_text())["passed"] is False

    # An explicit, audited override (DAG param) publishes the same run and records why.
    res = dags_test(env, "synthcorpus_strict", "e2e-fail", override_gate_reason="smoke test of the override path")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lineage = json.loads((corpus / "versions" / "e2e-fail" / "lineage.json").read_text())
    assert lineage["gate"]["override"]["reason"] == "smoke test of the override path"
    assert json.loads((corpus / "latest.json").read_text())["version"] == "e2e-fail"


def test_demo_spec_with_web_and_instruction_seeds(airflow_env):
    """The shipped demo spec (outline + clustered web samples + instructions), shrunk to run quickly."""
    import yaml

    base, corpora, env = airflow_env
    demo = yaml.safe_load((ROOT / "include" / "corpora" / "demo.yaml").read_text())
    demo.update(name="demo_small", documents=12)
    demo["refresh"]["expected_yield"] = 1.0  # one prompt per document: the plan's counts below are exact
    for key in ("web_samples", "instructions"):
        demo["seeds"][key]["path"] = str(ROOT / "include" / "seeds" / Path(demo["seeds"][key]["path"]).name)
    demo["seeds"]["outline"] = str(ROOT / "include" / "seeds" / "demo_outline.yaml")
    decontam = demo["quality"]["decontamination"]
    for ref in decontam["references"]:
        ref["path"] = str(ROOT / "include" / "seeds" / Path(ref["path"]).name)
    decontam["canaries"] = str(ROOT / "include" / "seeds" / Path(decontam["canaries"]).name)
    demo["seeds"]["web_samples"]["sample_size"] = 120
    demo["prompts"]["template_dir"] = str(ROOT / "include" / "prompts")
    demo["topics"].update(max_clusters=8, label_samples=3, labeler="engine")  # the LLM labels (the demo: keywords)
    demo["generation"].update(max_tokens=48, shard_size=6)
    demo["quality"].update(min_words=5, drop_truncated=False, min_documents=1, max_filtered_share=0.9, max_opening_share=1.0)
    demo["quality"].pop("word_quantiles")  # 48-token documents are far shorter than the demo's median bound
    (corpora / "demo_small.yaml").write_text(yaml.safe_dump(demo))
    res = dags_test(env, "synthcorpus_demo_small", "e2e-web")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    run = base / "storage" / "demo_small" / "runs" / "e2e-web"
    topics = pq.read_table(run / "topics" / "topics.parquet").to_pylist()
    kinds = Counter(t["kind"] for t in topics)
    assert kinds["outline"] == 12 and kinds["instruction"] == 1 and 2 <= kinds["web"] <= 8
    assert all(t["label"] for t in topics)
    assignments = pq.read_table(run / "topics" / "assignments.parquet")
    seeds = pq.read_table(run / "seeds" / "seeds.parquet")
    assert sorted(assignments.column("seed_id").to_pylist()) == sorted(seeds.column("seed_id").to_pylist())
    prompts = pq.read_table(run / "prompts" / "prompts.parquet").to_pylist()
    assert len(prompts) == 12 and len({p["prompt_id"] for p in prompts}) == 12
    assert Counter(p["format"] for p in prompts).keys() == {"textbook", "blog_post", "wikihow", "story", "dialogue", "technical"}
    diversity = json.loads((run / "quality_gate" / "diversity.json").read_text())
    assert diversity["prompts"]["prompts"] == 12
    assert diversity["openings"]["documents"] == json.loads((run / "lineage.json").read_text())["counts"]["documents"]
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["decontamination"]["canaries_caught"] == lineage["decontamination"]["canaries_planted"] == 6
    # the demo's judge ran as its own mapped task: every filtered document judged once, scored or not
    judge = lineage["judge"]
    assert judge["input"] == judge["scored"] + judge["unscored"] >= lineage["counts"]["after_filters"] > 0
    assert judge["judge_completion_tokens"] > 0
    assert lineage["counts"]["after_near_dedup"] is not None
    # The demo's other release expectations were part of the suite (and passed).
    report = json.loads((run / "quality_gate" / "report.json").read_text())
    checked = {e["column"] for e in report["expectations"] if e["success"]}
    assert {"duplicate_rate", "contaminated", "canaries_missed", "language_match_rate", "format_max_share",
            "audience_max_share", "filtered_share_refusal", "filtered_share_generation_failed"} <= checked
    published = pq.read_table(base / "storage" / "demo_small" / "versions" / "e2e-web" / "data")
    assert {"seed_id", "seed_kind", "topic_in_prompt", "style_index"} <= set(published.column_names)


def test_openai_engine_against_local_llamacpp_server(airflow_env, tmp_path):
    """The DAG with generation.engine 'openai' pointed (through an Airflow connection) at a real
    OpenAI-compatible server: llama-cpp-python's, serving the bundled model."""
    from tests.integration.test_openai_server import free_port, start_server, stop_server

    base, corpora, env = airflow_env
    port = free_port()
    server = start_server(port, tmp_path / "server.log")
    try:
        write_spec(corpora, tiny_spec_dict(name="remote", documents=6, **{
            "generation.engine": "openai", "generation.model": "smollm2-135m-instruct",
            "generation.max_tokens": 40, "generation.shard_size": 3,
            "generation.openai": {"conn_id": "llm_local", "concurrency": 2, "timeout_s": 60, "max_retries": 2},
        }))
        env = {**env, "AIRFLOW_CONN_LLM_LOCAL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "sk-e2e-secret-value"}
        res = dags_test(env, "synthcorpus_remote", "e2e-openai")
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        assert "sk-e2e-secret-value" not in res.stdout + res.stderr
    finally:
        stop_server(server)
    version = base / "storage" / "remote" / "versions" / "e2e-openai"
    lineage = json.loads((version / "lineage.json").read_text())
    assert lineage["model"]["engine"] == "openai"
    assert lineage["model"]["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert lineage["counts"]["generated"] == 6 and lineage["counts"]["completion_tokens"] > 0
    rows = pq.read_table(version / "data").to_pylist()
    assert rows and all(r["model"] == "smollm2-135m-instruct" for r in rows)
