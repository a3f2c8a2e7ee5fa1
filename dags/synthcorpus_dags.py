"""DAG factory: one DAG per corpus spec in include/corpora/*.yaml (``SYNTHCORPUS_CORPORA_DIR`` overrides).

Thin on purpose: one task per row of the stage table (``synthcorpus.stages.TABLE``), each running its
stage through the completion protocol; mapped stages expand over the plan's shards. A spec with
``publish.approval.required`` gets one more task between the gate and ``publish``: a person's approval
(``synthcorpus.release_approval``, Airflow's human-in-the-loop ApprovalOperator). Nothing heavy (GX,
llama.cpp, pandas) is imported at parse time. A broken spec does not take the other corpora down: this file skips it, and
``synthcorpus_spec_errors.py`` turns its problems into one DAG import error naming file and field.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from synthcorpus.layout import shard_name, shard_name_template
from synthcorpus.spec import CorpusSpec, discover
from synthcorpus.stages import SHARD_SOURCES, TABLE

CORPORA_DIR = Path(os.environ.get("SYNTHCORPUS_CORPORA_DIR") or Path(__file__).resolve().parents[1] / "include" / "corpora")


def _run_id(params: dict, context_run_id: str) -> str:
    # A fixed run name makes re-runs resume the same storage prefix (committed shards are skipped).
    return params.get("run_name") or context_run_id


def _execute(spec_path: str, stage: str, shard: int | None = None) -> dict | list[int]:
    """One stage (or one shard of a mapped stage) under the completion protocol; returns its marker
    (for the stages that define shards: the shard list, which the mapped stages expand over)."""
    from airflow.sdk.exceptions import AirflowFailException

    from synthcorpus.stages.contract import execute, open_run, retry_cannot_help

    context = get_current_context()
    params = context["params"]
    if shard is not None:
        context["shard_label"] = shard_name(shard)
    from synthcorpus.airflow_adapter import emit_metrics
    from synthcorpus.observability import gate_failed, stage_metrics

    run = None
    try:
        run = open_run(spec_path, _run_id(params, context["run_id"]), params)
        marker = execute(run, stage, shard)
    except Exception as exc:
        if run is not None and type(exc).__name__ == "GateFailed":
            emit_metrics(gate_failed(run.spec.name))
        if retry_cannot_help(exc):  # fail now, without the spec's retries: a retry would fail the same way
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise
    emit_metrics(stage_metrics(run.spec.name, stage, marker))  # StatsD, as [metrics] configures (README "Metrics")
    if stage == "publish":  # the release, for consumers scheduled on the corpus asset
        from synthcorpus.publish import release_event

        context["outlet_events"][_asset(run.spec)].extra = release_event(run.spec.name, run.run_id, marker)
    return marker["shards"] if stage in SHARD_SOURCES else marker


def _task_kwargs(spec: CorpusSpec, stage: str) -> dict:
    """Retries, execution_timeout and pool of a stage's task, from the spec's ``tasks`` section (a retried
    task resumes: committed shards are skipped, a generate shard continues from its checkpoints)."""
    kwargs = {
        "retries": spec.tasks.retries,
        "retry_delay": dt.timedelta(seconds=spec.tasks.retry_delay_s),
        "execution_timeout": dt.timedelta(seconds=spec.timeout_s(stage)),
    }
    if pool := spec.pool(stage):
        kwargs["pool"] = pool
    return kwargs


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
            "full_rebuild": Param(
                False,
                type="boolean",
                description="Build this version from scratch: no earlier documents, prompts or index are reused "
                "(default: a refresh publishes the latest version plus new documents).",
            ),
            "override_gate_reason": Param(
                None,
                type=["null", "string"],
                description="Publish even if the quality gate fails. Give the reason: it is recorded in the gate "
                "report, lineage.json and the dataset card. Leave empty for normal runs.",
            ),
        },
        doc_md=f"Corpus **{spec.name}** from `{spec_path}`: {spec.documents} new documents per run, formats "
        f"{', '.join(spec.prompts.formats)}, audiences {', '.join(spec.prompts.audiences)}.",
    )
    def corpus():
        created: dict = {}
        for stage in TABLE:
            if stage.name == "generate" and spec.generation.runner == "kubernetes":
                created[stage.name] = _kubernetes_generate(spec, spec_path, created[stage.shards_from])
            elif stage.mapped:  # one task per shard of the stage that defines them (its returned list)
                created[stage.name] = task(_execute, task_id=stage.name, map_index_template="{{ shard_label }}",
                                           **_task_kwargs(spec, stage.name)).partial(
                    spec_path=spec_path, stage=stage.name).expand(shard=created[stage.shards_from])
            else:
                created[stage.name] = task(_execute, task_id=stage.name, **_task_kwargs(spec, stage.name),
                                           outlets=[_asset(spec)] if stage.name == "publish" else [])(spec_path, stage.name)
            upstream = stage.upstream
            if stage.name == "publish" and spec.publish.approval.required:  # gate -> a person's approval -> publish
                from synthcorpus.release_approval import TASK_ID, release_approval

                created[TASK_ID] = release_approval(spec, spec_path, **_task_kwargs(spec, TASK_ID))
                for parent in upstream:
                    created[parent] >> created[TASK_ID]
                upstream = (TASK_ID,)
            for parent in upstream:
                created[parent] >> created[stage.name]

    return corpus()


def _asset(spec: CorpusSpec) -> Asset:
    return Asset(name=spec.asset_name, uri=spec.asset_uri)


def _kubernetes_generate(spec: CorpusSpec, spec_path: str, shards):
    """The Kubernetes variant of ``generate``: one GPU pod per shard running the same worker entrypoint
    in the generator image. Imported only for specs that use it: the provider pulls in the Kubernetes client."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from synthcorpus.kubernetes import pod_static_kwargs

    @task(**{k: v for k, v in _task_kwargs(spec, "pod_kwargs").items() if k != "pool"})
    def pod_kwargs(shard_list: list[int], params=None, run_id=None) -> list[dict]:
        # Runs on the Airflow worker: run id and storage URI are read at run time; JSON for XCom.
        from synthcorpus.kubernetes import pod_shard_kwargs
        from synthcorpus.layout import RunLayout
        from synthcorpus.spec import load_spec
        from synthcorpus.stages.generate import work_unit

        loaded = load_spec(spec_path)
        layout = RunLayout.of(loaded, _run_id(params, run_id))
        return [pod_shard_kwargs(loaded, work_unit(layout, i), layout.run_id) for i in shard_list]

    # Pods return no XCom; each output shard and its stats are committed to storage (the same marker).
    return KubernetesPodOperator.partial(
        task_id="generate",
        map_index_template=shard_name_template("task.labels['synthcorpus.io/shard']"),
        **_task_kwargs(spec, "generate"),
        **pod_static_kwargs(spec),
    ).expand_kwargs(pod_kwargs(shards))


_specs, _broken = discover(CORPORA_DIR)
for _spec in _specs:
    globals()[_spec.dag_id] = build_dag(_spec)
