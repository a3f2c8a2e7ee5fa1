"""approval: a person's decision between the quality gate and ``publish`` (spec ``publish.approval``).

Not a row of the stage table: it is an Airflow human-in-the-loop task (``synthcorpus.release_approval``)
that the DAG factory puts between ``quality_gate`` and ``publish`` when the spec requires it. This module
is what that task does with storage, and what ``publish`` checks:

- :func:`request` writes ``approval/request.json`` (when it asked, the gate summary it showed) and the run's
  ``lineage.json`` (so the run page has its counts while the request waits), and returns the request's
  subject and body (Markdown: the gate's expectations, counts, removed documents by reason, links).
- :func:`record` appends the answer to ``approval/decisions.json`` (every decision ever made for the run is
  kept) and writes it into ``lineage.json``; a rejection (or a timeout) also goes into the quarantine report.
- :func:`check` is ``publish``'s guard: with approval required, nothing is published without an approval
  of this very gate report (its sha256), whoever runs ``publish`` and however.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from .. import storage
from ..publish import PublishError
from .contract import RunContext

NAME = "approval"
APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"
BODY_EXPECTATIONS = 40  # rows of the expectations table in the request body (failures first)


class ApprovalMissing(PublishError):
    """``publish`` of a run whose spec requires an approval that this run has not got (a retry cannot help)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def gate_summary(run: RunContext) -> tuple[dict[str, Any], str]:
    """The gate report a decision is about, and its sha256 (a decision approves exactly this report)."""
    raw = storage.read_bytes(result_uri(run))
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def request(run: RunContext, *, run_page: str | None = None, report_page: str | None = None) -> dict[str, Any]:
    """Record that an approval was asked for and return ``{"subject", "body", ...}`` for the HITL request."""
    from .quality_gate import write_run_lineage

    gate, digest = gate_summary(run)
    req = {"requested_at": _iso(_now()), "gate_report": result_uri(run), "gate_report_sha256": digest}
    storage.write_json(run.layout.output(NAME, "request"), req)
    lineage = write_run_lineage(run, gate)  # its approval: awaiting
    subject, body = request_text(run, gate, lineage.get("counts") or {}, run_page=run_page, report_page=report_page)
    return {**req, "subject": subject, "body": body}


def result_uri(run: RunContext) -> str:
    return run.layout.output("quality_gate", "report")


def request_text(run: RunContext, gate: dict[str, Any], counts: dict[str, Any], *, run_page: str | None = None,
                 report_page: str | None = None) -> tuple[str, str]:
    """Subject and Markdown body of the request: what a person needs to decide, in the Airflow UI."""
    from ..quality.gate import format_cell

    spec = run.spec
    passed, override = gate.get("passed"), gate.get("override")
    status = "passed" if passed else "FAILED (overridden)" if override else "FAILED"
    docs = gate.get("metrics", {}).get("documents", counts.get("documents"))
    subject = f"Release {spec.name} {run.version}: gate {status}, {docs} documents"
    lines = [f"**Corpus `{spec.name}`, run `{run.run_id}`** would publish version `{run.version}` with **{docs}** new "
             f"documents. Quality gate: **{status}** ({gate.get('counts', {}).get('successful')} of "
             f"{gate.get('counts', {}).get('evaluated')} expectations met).", ""]
    if override:
        lines += [f"> **Gate override** requested: {override.get('reason')}. Failed expectations: "
                  f"{', '.join(override.get('failed_expectations', []))}.", ""]
    rows = sorted(gate.get("expectations", []), key=lambda e: bool(e.get("success")))
    lines += ["| batch | expectation | column | expected | observed | result |", "|---|---|---|---|---|---|"]
    for e in rows[:BODY_EXPECTATIONS]:
        cells = [format_cell(e.get(c)) for c in ("batch", "expectation", "column", "expected", "observed", "success")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if len(rows) > BODY_EXPECTATIONS:
        lines.append(f"\n… and {len(rows) - BODY_EXPECTATIONS} more expectations, all met (see the report).")
    funnel = [(k, counts.get(k)) for k in ("prompts", "generated", "after_filters", "after_dedup", "after_near_dedup",
                                           "documents") if counts.get(k) is not None]
    if funnel:
        lines += ["", "**Counts:** " + " → ".join(f"{k} {v}" for k, v in funnel)]
    removed = {k: v for k, v in (counts.get("filtered_out") or {}).items() if v}
    for key in ("exact_duplicates", "published_duplicates", "near_duplicates", "contaminated", "generation_failed"):
        if counts.get(key):
            removed.setdefault(key, counts[key])
    if funnel:
        lines += ["", "**Removed, by reason:** " + (", ".join(
            f"{k} {v}" for k, v in sorted(removed.items(), key=lambda kv: (-kv[1], kv[0]))) or "none")]
    links = [f"[run page]({run_page})" if run_page else None, f"[gate report]({report_page})" if report_page else None]
    if any(links):
        lines += ["", " · ".join(link for link in links if link)]
    lines += ["", "Approve to publish this version; Reject (or no answer in time) publishes nothing. Your comment is "
              "recorded with the decision in lineage.json, the dataset card and (rejections) the quarantine report."]
    return subject, "\n".join(lines)


def record(run: RunContext, *, chosen: str | None, by: dict[str, Any] | None, at: dt.datetime | None,
           comment: str | None = None, timed_out: bool = False) -> dict[str, Any]:
    """Record one decision (``chosen``: the HITL option, "Approve" or "Reject"); returns it."""
    from .quality_gate import write_run_lineage

    req_uri = run.layout.output(NAME, "request")
    req = storage.read_json(req_uri) if storage.exists(req_uri) else {}
    gate, digest = gate_summary(run)
    at = at or _now()
    status = TIMED_OUT if timed_out else APPROVED if chosen == "Approve" else REJECTED
    asked = dt.datetime.fromisoformat(req["requested_at"]) if req.get("requested_at") else None
    decision = {
        "status": status, "by": by or None, "at": _iso(at), "comment": (comment or "").strip() or None,
        "requested_at": req.get("requested_at"), "wait_s": round((at - asked).total_seconds(), 1) if asked else None,
        "gate_report": result_uri(run), "gate_report_sha256": digest, "gate_passed": gate.get("passed"),
        "override": gate.get("override"),
    }
    if req.get("gate_report_sha256") not in (None, digest):
        raise ApprovalMissing(f"{result_uri(run)}: the gate report changed after the approval was requested "
                              f"({req_uri} has sha256 {req['gate_report_sha256']}); ask again")
    uri = run.layout.output(NAME, "decisions")
    decisions = storage.read_json(uri) if storage.exists(uri) else []
    storage.write_json(uri, [*decisions, decision])
    write_run_lineage(run, gate)
    if status != APPROVED:  # the quarantine lists runs that were not released, with why
        storage.write_json(run.layout.quarantine, {**gate, "approval": decision})
    return decision


def decisions(run: RunContext) -> list[dict[str, Any]]:
    uri = run.layout.output(NAME, "decisions")
    return storage.read_json(uri) if storage.exists(uri) else []


def approval_of(run: RunContext, digest: str | None = None) -> dict[str, Any] | None:
    """The decision that stands for this run's current gate report (sha256 ``digest``; read when not given):
    the last one made about it, if any."""
    digest = digest or gate_summary(run)[1]
    found = [d for d in decisions(run) if d.get("gate_report_sha256") == digest]
    return found[-1] if found else None


def state(run: RunContext) -> dict[str, Any] | None:
    """What lineage.json and the run page say about approval: None when the spec requires none (or the gate
    has not reported yet, or failed), the standing decision, or ``{"status": "awaiting" | "not_requested",
    "requested_at", "assigned_users"}``."""
    if not run.spec.publish.approval.required or not storage.exists(result_uri(run)):
        return None
    gate, digest = gate_summary(run)
    decision = approval_of(run, digest)
    if decision is not None:
        return decision
    if not gate.get("passed") and not gate.get("override"):
        return None  # a failed gate: nothing to approve
    req_uri = run.layout.output(NAME, "request")
    req = storage.read_json(req_uri) if storage.exists(req_uri) else {}
    return {"status": "awaiting" if req.get("gate_report_sha256") == digest else "not_requested",
            "requested_at": req.get("requested_at"), "assigned_users": list(run.spec.publish.approval.assigned_users)}


def check(run: RunContext) -> dict[str, Any] | None:
    """``publish``'s guard: the approval of this gate report when the spec requires one (else None);
    raises :class:`ApprovalMissing` naming the field and what was found."""
    if not run.spec.publish.approval.required:
        return None
    decision = approval_of(run)
    if decision is not None and decision["status"] == APPROVED:
        return decision
    found = "no decision" if decision is None else (
        f"{decision['status']}" + (f" by {decision['by'].get('name') or decision['by'].get('id')}" if decision.get("by") else "")
        + f" at {decision['at']}")
    raise ApprovalMissing(
        f"{run.spec.source_path}: field 'publish.approval.required' is true: expected an approval of "
        f"{result_uri(run)} before publishing, found {found} (in {run.layout.output(NAME, 'decisions')}); "
        "approve the run's approval task in Airflow")
