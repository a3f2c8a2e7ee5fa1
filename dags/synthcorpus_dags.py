"""DAG factory: one DAG per corpus spec in include/corpora/*.yaml (``SYNTHCORPUS_CORPORA_DIR`` overrides).

Thin on purpose: tasks call ``synthcorpus.tasks``; nothing heavy (GX, llama.cpp, pandas) is imported at
parse time. A broken spec does not take the other corpora down: this file skips it, and
``synthcorpus_spec_errors.py`` turns its problems into one DAG import error naming file and field.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from synthcorpus.spec import CorpusSpec, discover

CORPORA_DIR = Path(os.environ.get("SYNTHCORPUS_CORPORA_DIR") or Path(__file__).resolve().parents[1] / "include" / "corpora")


def _run_id(params: dict, context_run_id: str) -> str:
    # A fixed run name makes re-runs resume the same storage prefix (committed shards are skipped).
    return params.get("run_name") or context_run_id


def _shard_label(uri: str) -> str:
    """A mapped task's label in the UI: the shard file name without its extension."""
    return uri.rsplit("/", 1)[-1].removesuffix(".parquet")


def build_dag(spec: CorpusSpec):
    spec_path = str(spec.source_path)

    @dag(
        dag_id=spec.dag_id,
        description=spec.description or f"synthcorpus corpus {spec.name}",
        schedule=spec.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["synthcorpus", f"corpus:{spec.name}"],
        params={
            "run_name": Param(
                None,
                type=["null", "string"],
                description="Storage run id; reuse one to resume a run (committed shards are skipped). "
                "Default: the Airflow run id.",
            ),
            "override_gate_reason": Param(
                None,
                type=["null", "string"],
                description="Publish even if the quality gate fails. Give the reason: it is recorded in the gate "
                "report, lineage.json and the dataset card. Leave empty for normal runs.",
            ),
        },
        doc_md=f"Corpus **{spec.name}** from `{spec_path}`: {spec.documents} documents, formats "
        f"{', '.join(spec.prompts.formats)}, audiences {', '.join(spec.prompts.audiences)}.",
    )
    def corpus():
        from synthcorpus import tasks  # light: the stage modules are imported inside each call

        @task
        def seeds(params=None, run_id=None) -> dict:
            return tasks.seeds(spec_path, _run_id(params, run_id))

        @task
        def topics(seeds_result: dict, params=None, run_id=None) -> dict:
            return tasks.topics(spec_path, _run_id(params, run_id), seeds_result["outputs"]["seeds"])

        @task
        def prompts(seeds_result: dict, topics_result: dict, params=None, run_id=None) -> dict:
            return tasks.prompts(spec_path, _run_id(params, run_id), seeds_result["outputs"]["seeds"], topics_result)

        @task
        def plan_shards(prompts_result: dict, params=None, run_id=None) -> list[dict]:
            return tasks.plan(spec_path, _run_id(params, run_id), prompts_result["outputs"]["prompts"])

        @task(map_index_template="{{ shard_label }}")
        def generate(shard: dict) -> dict:
            get_current_context()["shard_label"] = f"shard-{shard['index']:05d}"
            return tasks.generate(shard)

        @task(map_index_template="{{ shard_label }}")
        def filter_shard(generated: dict, params=None, run_id=None) -> str:
            get_current_context()["shard_label"] = f"shard-{generated['index']:05d}"
            return tasks.filter_shard(spec_path, _run_id(params, run_id), generated["output"])["outputs"]["kept"]

        @task
        def dedup(filtered: list[str], params=None, run_id=None) -> dict:
            return tasks.dedup(spec_path, _run_id(params, run_id), list(filtered))

        @task
        def shard_uris(stage_result: dict) -> list[str]:
            # A stage's document shards, as the list a mapped task expands over.
            return stage_result["outputs"]["documents"]

        @task(map_index_template="{{ shard_label }}")
        def minhash_signatures(document_uri: str, params=None, run_id=None) -> str:
            get_current_context()["shard_label"] = _shard_label(document_uri)
            return tasks.signatures(spec_path, _run_id(params, run_id), document_uri)

        @task
        def near_dedup(dedup_result: dict, signature_uris: list[str], params=None, run_id=None) -> dict:
            docs = dedup_result["outputs"]["documents"]
            return tasks.near_dedup(spec_path, _run_id(params, run_id), docs, list(signature_uris))

        @task
        def decontaminate(near_result: dict, params=None, run_id=None) -> dict:
            return tasks.decontaminate(spec_path, _run_id(params, run_id), near_result["outputs"]["documents"])

        @task(map_index_template="{{ shard_label }}")
        def validate_shard(document_uri: str, params=None, run_id=None) -> dict:
            # The documents expectations of the release suite, one shard per task (GX Core).
            get_current_context()["shard_label"] = _shard_label(document_uri)
            return tasks.validate_shard(spec_path, _run_id(params, run_id), document_uri)

        @task
        def quality_gate(clean_result: dict, shard_results: list[dict], params=None, run_id=None) -> dict:
            # Merges the shard results (read back from storage) with the run-metrics expectations.
            return tasks.gate(spec_path, _run_id(params, run_id), clean_result["outputs"]["documents"],
                              params.get("override_gate_reason"))

        @task(outlets=[Asset(name=f"synthcorpus_{spec.name}", uri=f"synthcorpus://{spec.name}/latest")])
        def publish(gate_result: dict, params=None, run_id=None) -> dict:
            return tasks.publish(spec_path, _run_id(params, run_id))

        @task
        def summary(publish_result: dict, params=None, run_id=None) -> str:
            text = tasks.summary(spec_path, _run_id(params, run_id))
            print(text)
            return text

        seeded = seeds()
        shards = plan_shards(prompts(seeded, topics(seeded)))
        if spec.generation.runner == "kubernetes":
            # One GPU pod per shard, running the same worker entrypoint in the generator image.
            # Imported only for specs that use it: the provider pulls in the Kubernetes client.
            from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

            from synthcorpus.kubernetes import pod_static_kwargs

            @task
            def pod_kwargs(shard_list: list[dict], params=None, run_id=None) -> list[dict]:
                # Runs on the Airflow worker: run id and storage URI are read at run time; JSON for XCom.
                from synthcorpus.kubernetes import pod_shard_kwargs
                from synthcorpus.spec import load_spec

                return [pod_shard_kwargs(load_spec(spec_path), s, _run_id(params, run_id)) for s in shard_list]

            generated = KubernetesPodOperator.partial(
                task_id="generate",
                map_index_template="shard-{{ task.labels['synthcorpus.io/shard'] }}",
                **pod_static_kwargs(spec),
            ).expand_kwargs(pod_kwargs(shards))
            # Pods return no XCom; each output shard and its stats are committed to storage.
            filtered = filter_shard.expand(generated=shards)
            generated >> filtered
        else:
            generated = generate.expand(shard=shards)
            filtered = filter_shard.expand(generated=generated)
        exact = dedup(filtered)
        sigs = minhash_signatures.expand(document_uri=shard_uris.override(task_id="dedup_shards")(exact))
        clean = decontaminate(near_dedup(exact, sigs))
        validated = validate_shard.expand(document_uri=shard_uris.override(task_id="clean_shards")(clean))
        summary(publish(quality_gate(clean, validated)))

    return corpus()


_specs, _broken = discover(CORPORA_DIR)
for _spec in _specs:
    globals()[_spec.dag_id] = build_dag(_spec)
