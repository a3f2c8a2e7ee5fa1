"""The release approval task (spec ``publish.approval``): Airflow's human-in-the-loop ``ApprovalOperator``
(providers-standard) between ``quality_gate`` and ``publish``.

- Asking: the request's subject and body are the gate summary (``stages.approval.request``: observed vs
  expected, counts, removed documents by reason, links to the run's Corpora page and gate report), built
  when the task runs, not templated (a document opening in the report must not be read as Jinja). The
  task then waits in Airflow's ``awaiting_input`` state; anyone in ``assigned_users`` (anyone allowed, if
  empty) answers in the UI's Required Actions or through ``PATCH .../hitlDetails``, with a comment.
- Answered: the decision (who, when, comment, how long it waited) is recorded in storage
  (``stages.approval.record``: decisions.json, lineage.json, the quarantine report when not approved) and
  sent as metrics; then the operator does what ``ApprovalOperator`` does: Approve runs ``publish``, Reject
  skips it (and ``summary``). No answer within ``timeout``: the scheduler applies the default, Reject.
- Re-run of a run whose version is published, or whose very gate report was approved already: no new
  request (the recorded approval stands; ``publish`` checks it again itself).

Imports Airflow (like ``airflow_adapter`` and ``ui.plugin``); the DAG factory imports it only for specs
that require approval.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param

TASK_ID = "approval"
log = logging.getLogger(__name__)


class ReleaseApproval(ApprovalOperator):
    template_fields = ()  # subject and body come from the gate report at run time (see the module doc)
    ui_color = "#fde68a"

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Release approval")
        kwargs.setdefault("params", {"comment": Param(
            "", type="string", title="Comment",
            description="Why you approve or reject this release: recorded in lineage.json, the dataset card and "
            "(rejections) the quarantine report")})
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def _run(self, context: Any) -> Any:
        from synthcorpus.stages.contract import open_run

        params = context["params"]
        return open_run(self.spec_path, params.get("run_name") or context["run_id"], params)

    def execute(self, context: Any) -> Any:
        from synthcorpus import storage
        from synthcorpus.stages import approval

        run = self._run(context)
        if storage.exists(run.layout.marker("publish")):
            log.info("version %s is published already: nothing to approve", run.version)
            return None
        standing = approval.approval_of(run)
        if standing is not None and standing["status"] == approval.APPROVED:
            log.info("this gate report was approved already by %s at %s: not asking again", standing.get("by"), standing["at"])
            return None
        run_page, report_page = _links(context)
        req = approval.request(run, run_page=run_page, report_page=report_page)
        self.subject, self.body = req["subject"], req["body"]
        log.info("asked for approval of %s (assigned: %s)", run.version, self.assigned_users or "anyone allowed")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from synthcorpus.airflow_adapter import emit_metrics
        from synthcorpus.observability import approval_metrics
        from synthcorpus.stages import approval

        run = self._run(context)
        at = event.get("responded_at")
        if isinstance(at, str):
            at = dt.datetime.fromisoformat(at)
        timed_out = bool(event.get("timedout")) or event.get("error_type") == "timeout"
        chosen = (event.get("chosen_options") or [None])[0]
        decision = approval.record(run, chosen=chosen, by=event.get("responded_by_user"), at=at,
                                   comment=(event.get("params_input") or {}).get("comment"), timed_out=timed_out)
        emit_metrics(approval_metrics(run.spec.name, decision))
        log.info("release %s: %s by %s at %s (waited %ss)%s", run.version, decision["status"], decision["by"], decision["at"],
                 decision["wait_s"], f": {decision['comment']}" if decision["comment"] else "")
        return super().execute_complete(context, event)


def _links(context: Any) -> tuple[str | None, str | None]:
    """The run's Corpora page and gate report, as absolute links from ``[api] base_url``."""
    from airflow.sdk.configuration import conf

    from synthcorpus.ui.plugin import run_page_url

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if not base:
        return None, None
    page = run_page_url(base, context["dag"].dag_id, context["run_id"])
    return page, f"{page}/files/report.html"


def release_approval(spec: Any, spec_path: str, **task_kwargs: Any) -> ReleaseApproval:
    """The approval task of a spec with ``publish.approval.required``."""
    cfg = spec.publish.approval
    return ReleaseApproval(
        task_id=TASK_ID, spec_path=spec_path,
        assigned_users=[{"id": u, "name": u} for u in cfg.assigned_users] or None,
        response_timeout=dt.timedelta(seconds=cfg.timeout),
        defaults=[ApprovalOperator.REJECT],  # on_timeout: reject (the only choice: silence is not an approval)
        doc_md=f"Approve or reject the release of **{spec.name}** (gate summary in the request). Timeout "
               f"{cfg.timeout:g} s → reject. Assigned: {', '.join(cfg.assigned_users) or 'anyone allowed'}.",
        **task_kwargs,
    )
