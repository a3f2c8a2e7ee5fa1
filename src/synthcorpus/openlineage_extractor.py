"""The OpenLineage extractor of the synthcorpus stage tasks: the Airflow OpenLineage provider's supported
extension point, registered in ``airflow.cfg`` (``[openlineage] extractors =
synthcorpus.openlineage_extractor.SynthcorpusStageExtractor``).

Every stage task is a ``@task`` built from ``_execute`` in ``dags/synthcorpus_dags.py`` (task type
``_PythonDecoratedOperator``, arguments ``spec_path``, ``stage`` and, for mapped stages, ``shard``). When the
task completes (or fails), :meth:`SynthcorpusStageExtractor.extract_on_complete` reads the stage's committed
marker through the stage contract -- run id = the DAG param ``run_name`` or the Airflow run id, as the DAG
does -- and :mod:`synthcorpus.openlineage_facets` turns it into input and output datasets and facets. The
provider puts them into its own START / COMPLETE / FAIL events: nothing here builds or sends an event.

Never breaks a task or its events: any other ``_PythonDecoratedOperator`` (the Kubernetes runner's
``pod_kwargs``, a user's ``@task``) gets empty lineage (the provider then falls back to hook lineage and
the task's inlets and outlets, as without this extractor), and an error while extracting is logged and
yields empty lineage.
"""

from __future__ import annotations

import inspect
from typing import Any

from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage

STAGE_CALLABLE = "_execute"  # the DAG factory's stage task function (dags/synthcorpus_dags.py)


class SynthcorpusStageExtractor(BaseExtractor):
    """Input and output datasets, their facets and the run facet of every synthcorpus stage task."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    # ------------------------------------------------------------------ which task this is

    def stage_call(self) -> dict[str, Any] | None:
        """``{"spec_path", "stage", "shard"}`` of a synthcorpus stage task, None for any other task."""
        from synthcorpus.stages import STAGES

        op = self.operator
        fn = getattr(op, "python_callable", None)
        if getattr(fn, "__name__", None) != STAGE_CALLABLE:
            return None
        try:
            bound = inspect.signature(fn).bind_partial(*(getattr(op, "op_args", None) or ()),
                                                       **(getattr(op, "op_kwargs", None) or {}))
        except (TypeError, ValueError):
            return None
        args = bound.arguments
        if not isinstance(args.get("spec_path"), str) or args.get("stage") not in STAGES:
            return None
        shard = args.get("shard")
        return {"spec_path": args["spec_path"], "stage": args["stage"],
                "shard": int(shard) if isinstance(shard, (int, str)) and str(shard).isdigit() else None}

    # ------------------------------------------------------------------ the provider's entry points

    def _execute_extraction(self) -> OperatorLineage | None:
        """START: the run facet (spec, model as configured, code); datasets come with COMPLETE / FAIL,
        once the run id (a DAG param) and the marker are known."""
        call = self.stage_call()
        if call is None:
            return OperatorLineage()  # not ours: what the provider gives a task without lineage
        try:
            from synthcorpus import openlineage_facets as olf
            from synthcorpus.lineage import code_version
            from synthcorpus.spec import load_spec

            spec = load_spec(call["spec_path"])
            facet = olf.run_facet(spec, None, call["stage"], call["shard"], model=olf.model_block(None, spec),
                                  code=olf.code_block(code_version()))
            return OperatorLineage(run_facets={olf.RUN_FACET_KEY: facet})
        except Exception as exc:  # noqa: BLE001 - lineage must never break a task
            self.log.warning("synthcorpus OpenLineage: no START lineage for %s: %s: %s",
                             getattr(self.operator, "task_id", "?"), type(exc).__name__, exc)
            return OperatorLineage()

    def extract_on_complete(self, task_instance) -> OperatorLineage | None:
        return self._lineage(task_instance)

    def extract_on_failure(self, task_instance) -> OperatorLineage | None:
        return self._lineage(task_instance)

    # ------------------------------------------------------------------ building it

    def _run_id(self, task_instance) -> tuple[str, dict]:
        """(the storage run id, the DAG run's params) as ``_run_id`` in the DAG file computes it."""
        params: Any = {}
        try:
            params = task_instance.get_template_context().get("params") or {}
        except Exception:  # noqa: BLE001 - no context outside a task process: the task's own params
            params = getattr(self.operator, "params", None) or {}
        params = {k: params[k] for k in params} if hasattr(params, "__getitem__") else {}
        return params.get("run_name") or task_instance.run_id, params

    def _lineage(self, task_instance) -> OperatorLineage:
        call = self.stage_call()
        if call is None:
            return OperatorLineage()  # not ours: what the provider gives a task without lineage
        try:
            lineage = self.stage_lineage(call, task_instance)
        except Exception as exc:  # noqa: BLE001 - lineage must never break a task
            self.log.warning("synthcorpus OpenLineage: no lineage for %s: %s: %s",
                             getattr(self.operator, "task_id", "?"), type(exc).__name__, exc)
            self.log.debug("synthcorpus OpenLineage extraction failure", exc_info=True)
            return OperatorLineage()
        return OperatorLineage(inputs=lineage.inputs, outputs=lineage.outputs, run_facets=lineage.run_facets)

    def stage_lineage(self, call: dict[str, Any], task_instance) -> Any:
        """Read the stage's marker (and the gate report, the version manifest) through the stage contract."""
        from synthcorpus import openlineage_facets as olf
        from synthcorpus import storage
        from synthcorpus.lineage import code_version
        from synthcorpus.spec import load_spec
        from synthcorpus.stages import STAGES
        from synthcorpus.stages.contract import RunContext, StageError, result, shards

        stage = call["stage"]
        run_id, params = self._run_id(task_instance)
        # Read-only: the task itself opened (and pinned) the run; the extractor only observes it.
        run = RunContext.create(load_spec(call["spec_path"]), run_id, params)
        entry = STAGES[stage]
        shard = call["shard"]
        map_index = getattr(task_instance, "map_index", -1)
        if entry.mapped and shard is None and isinstance(map_index, int) and map_index >= 0:
            shard = shards(run, stage)[map_index]
        marker = result(run, stage, shard if entry.mapped else None, required=False)

        generate_stats = marker.get("stats") if stage == "generate" else None
        if generate_stats is None:
            try:
                first = shards(run)[:1]
            except StageError:
                first = []
            generate_stats = result(run, "generate", first[0], required=False).get("stats") if first else None
        facet = olf.run_facet(run.spec, run.run_id, stage, shard, model=olf.model_block(generate_stats, run.spec),
                              code=olf.code_block(code_version()), marker=marker)

        report = manifest = None
        if stage == olf.GATE_STAGE:
            uri = (marker.get("outputs") or {}).get("report") or run.layout.output(stage, "report")
            report = storage.read_json(uri) if storage.exists(uri) else None  # a failed gate leaves its report
        if stage == olf.VERSION_STAGE and marker:
            manifest = storage.read_json(marker["outputs"]["manifest"])
        return olf.stage_lineage(run.layout, stage, entry.reads, marker, facet=facet, gate_report=report,
                                 manifest=manifest)
