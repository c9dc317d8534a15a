"""Alerts: what a person on call reads (email) and what a machine reads (JSON), sized to SNS.

Pure: how a message reads (``render_batch``) and the fullest form of it that fits SNS's limits
(``fit``). Which alerts go out together is decided in oomcheck.alerting.outbox, the SNS adapter
is oomcheck.alerting.sns, the delivery loop oomcheck.alerting.delivery.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from oomcheck.alerting.outbox import Batch, batch_key, dedup_key
from oomcheck.alerting.runbooks import Runbooks
from oomcheck.detect.text import (
    GONE,
    NOT_ABOUT_A_WORKER,
    cause_suffix,
    cause_words,
    fate_line,
    fates_text,
    group_headline,
    headline,
    utc,
)
from oomcheck.model import Action, Finding, Incident, IncidentKey, Kind, PendingAlert, Severity
from oomcheck.store.codec import finding_to_json

__all__ = [
    "SNS_MAX_BYTES",
    "AlertMessage",
    "PublishError",
    "batch_subject",
    "fit",
    "reduced",
    "render",
    "render_batch",
    "request_size",
    "sns_request",
    "subject_for",
]

SUBJECT_MAX = 99  # SNS: under 100 characters, no newlines
# SNS's limit for the whole request: the JSON body with every per-protocol copy, the subject and
# the message attributes. A little is kept back for what SNS itself may count differently.
SNS_MAX_BYTES = 256 * 1024
FIT_BYTES = SNS_MAX_BYTES - 1024
# Tasks listed in full, tried in this order until the message fits.
TASK_LEVELS = (50, 10, 0)
WHERE_TO_READ = "`oomcheck audit` (or the check's JSON report) lists them all"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    incident_id: str  # the first (or only) incident; every one is in incident_ids
    action: Action
    kind: Kind
    severity: Severity
    subject: str
    text: str
    payload: dict[str, Any]
    dedup_key: str = ""
    incident_ids: tuple[str, ...] = ()
    # channels that took this alert in an earlier run (PendingAlert.taken): not sent it again
    taken: frozenset[str] = frozenset()


class PublishError(RuntimeError):
    """A publish failed. ``permanent``: it can never succeed as sent (SNS refused the message
    itself), so retrying the same message is pointless. ``taken``: the channels that have the
    message all the same (with several channels, the others took it)."""

    def __init__(
        self, message: str, *, permanent: bool = False, taken: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.taken = taken


# ------------------------------------------------------------------------------ headlines
# (their words, by kind, are in oomcheck.detect.text)

# Kinds whose headline counts the tasks that died with them.
_COUNTS_TASKS = frozenset(
    {Kind.WORKER_LOST, Kind.WORKER_RESTARTED, Kind.CHILD_KILLED, Kind.TASK_ORPHANED}
)


def _shared_exit_code(findings: Iterable[Finding]) -> int | None:
    codes = {f.exit_code for f in findings}
    return codes.pop() if len(codes) == 1 else None


def _headline(findings: tuple[Finding, ...], *, brief: bool = False) -> str:
    """What happened, in a subject's words; ``brief``: without cause and task count (an update
    says what changed instead)."""
    first = findings[0]
    kind = first.kind
    cause = "" if brief else cause_suffix(first.cause, _shared_exit_code(findings))
    if len(findings) == 1:
        text = headline(kind).format(
            worker=first.worker or "unknown worker",
            cause=cause,
            subject=first.key.subject if first.key else "",
        )
        if kind in (Kind.POISON_TASK, Kind.MEMORY_PRESSURE) and first.tasks:
            text += f": {first.tasks[0].name or first.tasks[0].id}"
    else:
        text = group_headline(kind).format(n=len(findings), cause=cause)
    tasks = sum(len(f.tasks) for f in findings)
    if tasks and kind in _COUNTS_TASKS and not brief:
        text += f", {tasks} task(s)"
    return text


def batch_subject(batch: Batch) -> str:
    findings = tuple(i.finding for i in batch.incidents)
    severity = findings[0].severity.value.upper()
    if batch.action is Action.UPDATE:
        note = batch.members[0][1].note or "details changed"
        text = f"[oomcheck] UPDATE {severity}: {_headline(findings, brief=True)} - {note}"
    else:
        prefix = {
            Action.OPEN: f"[oomcheck] {severity}: ",
            Action.REMIND: f"[oomcheck] STILL OPEN {severity}: ",
            Action.RESOLVE: "[oomcheck] RESOLVED: ",
        }[batch.action]
        text = prefix + _headline(findings)
    return clean_subject(text)


def subject_for(finding: Finding, action: Action, note: str | None = None) -> str:
    key = finding.key or IncidentKey(finding.kind, "")
    incident = Incident(id="", key=key, kind=finding.kind, opened_at=0.0, finding=finding)
    return batch_subject(Batch(action, ((incident, PendingAlert(action, 0.0, note=note)),)))


def clean_subject(text: str) -> str:
    subject = " ".join(text.split())  # no newlines or runs of blanks
    subject = subject.encode("ascii", "replace").decode("ascii")
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 3].rstrip() + "..."
    return subject


def _opening(batch: Batch, now: float) -> list[str]:
    incident, pending = batch.members[0]
    findings = [i.finding for i in batch.incidents]
    if batch.action is Action.RESOLVE:
        return [
            "RESOLVED",
            f"  {incident.resolution or GONE}",
            "",
            f"What happened: {incident.finding.summary}",
            "",
        ]
    if batch.action is Action.REMIND:
        minutes = (now - incident.opened_at) / 60
        return [
            f"STILL OPEN since {utc(incident.opened_at)} ({minutes:.0f} min)",
            f"  {incident.finding.summary}",
            "",
        ]
    if batch.action is Action.UPDATE:
        return [f"UPDATE: {pending.note or 'details changed'}", f"  {incident.finding.summary}", ""]
    if len(findings) == 1:
        return ["WHAT HAPPENED", f"  {incident.finding.summary}", ""]
    # "12 workers died, OOM-killed, 340 task(s): 40 awaiting redelivery, 300 lost"
    parts = (
        group_headline(findings[0].kind).format(n=len(findings), cause=""),
        cause_words(findings[0].cause, _shared_exit_code(findings)),
        fates_text(t for f in findings for t in f.tasks),
    )
    return ["WHAT HAPPENED", "  " + ", ".join(p for p in parts if p), ""]


def _facts(batch: Batch) -> list[str]:
    if len(batch.members) == 1:
        incident = batch.members[0][0]
        finding = incident.finding
        code = f" (exit code {finding.exit_code})" if finding.exit_code is not None else ""
        named = finding.worker is not None or finding.kind not in NOT_ABOUT_A_WORKER
        return [
            f"  Kind:       {finding.kind.value} ({finding.severity.value})",
            *([f"  Worker:     {finding.worker or 'unknown'}"] if named else []),
            f"  Cause:      {finding.cause.value}{code}",
            f"  First seen: {utc(incident.opened_at)}",
            f"  Incident:   {incident.id}",
            "",
        ]
    lines = [f"WORKERS ({len(batch.members)}), each its own incident"]
    for incident in batch.incidents:
        finding = incident.finding
        detail = ", ".join(
            p
            for p in (cause_words(finding.cause, finding.exit_code), fates_text(finding.tasks))
            if p
        )
        lines.append(f"  - {finding.worker or 'unknown'}: {detail or 'no detail'} [{incident.id}]")
    return [*lines, ""]


def _tasks(findings: tuple[Finding, ...], max_tasks: int) -> list[str]:
    total = sum(len(f.tasks) for f in findings)
    if not total:
        return []
    shown = [t for f in findings for t in f.tasks][:max_tasks]
    lines = [f"TASKS ({total})", *(fate_line(t) for t in shown)]
    if total > len(shown):
        lines.append(f"  ... and {total - len(shown)} more: {WHERE_TO_READ}")
    return [*lines, ""]


def render_text(
    batch: Batch, now: float, max_tasks: int = TASK_LEVELS[0], runbook: str | None = None
) -> str:
    findings = tuple(i.finding for i in batch.incidents)
    lines = _opening(batch, now) + _facts(batch) + _tasks(findings, max_tasks)
    evidence = [e for f in findings for e in f.evidence]
    if evidence and max_tasks:
        lines += ["EVIDENCE", *(f"  - {e}" for e in evidence[:20])]
        if len(evidence) > 20:
            lines.append(f"  ... and {len(evidence) - 20} more")
        lines.append("")
    if findings[0].advice and batch.action is not Action.RESOLVE:
        lines.append("WHAT TO DO")
        lines += [f"  {i}. {a}" for i, a in enumerate(findings[0].advice, 1)]
        lines.append("")
    if runbook:
        lines += ["RUNBOOK", f"  {runbook}", ""]
    lines.append(
        f"-- oomcheck, {utc(now)}. One alert per incident; a reminder while it stays open, "
        "a notice when it is resolved."
    )
    return "\n".join(lines)


def _members_json(batch: Batch, max_tasks: int) -> list[dict[str, Any]]:
    out = []
    budget = max_tasks
    for incident, pending in batch.members:
        finding = incident.finding
        shown = finding.tasks[: max(0, budget)]
        budget -= len(shown)
        out.append(
            {
                "incident_id": incident.id,
                "dedup_key": dedup_key(incident, pending),
                "opened_at": incident.opened_at,
                "tasks_total": len(finding.tasks),
                "finding": finding_to_json(replace(finding, tasks=shown)),
            }
        )
    return out


def _links(runbook: str | None) -> dict[str, Any]:
    """The runbook as the payload carries it: ``links`` in PagerDuty Events v2's shape."""
    if not runbook:
        return {}
    return {"runbook_url": runbook, "links": [{"href": runbook, "text": "Runbook"}]}


def render_batch(
    batch: Batch,
    now: float,
    max_tasks: int = TASK_LEVELS[0],
    runbooks: Runbooks | None = None,
) -> AlertMessage:
    first, pending = batch.members[0]
    subject = batch_subject(batch)
    runbook = (runbooks or Runbooks()).for_kind(first.kind)
    text = render_text(batch, now, max_tasks, runbook)
    severity = Severity.INFO if batch.action is Action.RESOLVE else first.finding.severity
    key = batch_key(batch)
    members = _members_json(batch, max_tasks)
    payload: dict[str, Any] = {
        "schema": 1,
        "source": "oomcheck",
        "action": batch.action.value,
        "dedup_key": key,
        "incident_id": first.id,
        "incident_ids": [i.id for i in batch.incidents],
        "kind": first.kind.value,
        "severity": severity.value,
        "opened_at": first.opened_at,
        "closed_at": first.closed_at,
        "resolution": first.resolution if batch.action is Action.RESOLVE else None,
        "note": pending.note if batch.action is Action.UPDATE else None,
        "sent_at": now,
        "subject": subject,
        "finding": members[0]["finding"],
        "incidents": members,
        "tasks_total": sum(len(i.finding.tasks) for i in batch.incidents),
        "text": text,
        **_links(runbook),
    }
    return AlertMessage(
        incident_id=first.id,
        action=batch.action,
        kind=first.kind,
        severity=severity,
        subject=subject,
        text=text,
        payload=payload,
        dedup_key=key,
        incident_ids=tuple(i.id for i in batch.incidents),
    )


def render(incident: Incident, action: Action, now: float) -> AlertMessage:
    """One incident's alert, its first pending one when that is ``action``."""
    head = next((p for p in incident.pending[:1] if p.action == action), PendingAlert(action, now))
    return fit(Batch(action, ((incident, head),)), now)


# ------------------------------------------------------------------------------ SNS's limits


def sns_request(message: AlertMessage) -> dict[str, Any]:
    """Publish arguments: text for email, the JSON for every machine protocol (SNS gives them
    ``default``), the subject for SMS. Filterable attributes, and the dedup key."""
    machine = json.dumps(message.payload, separators=(",", ":"), default=str)
    body = {"default": machine, "email": message.text, "sms": message.subject}
    attributes = {
        "kind": message.kind.value,
        "severity": message.severity.value,
        "action": message.action.value,
        "dedup_key": message.dedup_key,
    }
    return {
        "Subject": message.subject,
        "Message": json.dumps(body, separators=(",", ":")),
        "MessageStructure": "json",
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }


def request_size(request: dict[str, Any]) -> int:
    """Bytes SNS counts against its limit: the message, its attributes (name, type, value) and,
    to be safe, the subject."""
    size = len(request["Message"].encode()) + len(request["Subject"].encode())
    for name, value in request["MessageAttributes"].items():
        size += len(name.encode()) + len(value["DataType"]) + len(value["StringValue"].encode())
    return size


def fit(batch: Batch, now: float, runbooks: Runbooks | None = None) -> AlertMessage:
    """The fullest rendering of ``batch`` that SNS accepts: fewer tasks listed in full, then
    the reduced form."""
    for level in TASK_LEVELS:
        message = render_batch(batch, now, level, runbooks)
        if request_size(sns_request(message)) <= FIT_BYTES:
            return message
    return reduced(batch, now, runbooks)


_REDUCED_TEXT = 16_000
_REDUCED_IDS = 2_000


def reduced(batch: Batch, now: float, runbooks: Runbooks | None = None) -> AlertMessage:
    """The smallest useful form: headline, counts, incident ids and where to read the rest.
    Sent when the full form does not fit, or when SNS refused it."""
    full = render_batch(batch, now, 0, runbooks)
    text = full.text
    if len(text) > _REDUCED_TEXT:
        text = text[:_REDUCED_TEXT] + f"\n... (shortened; {WHERE_TO_READ})"
    ids = list(full.incident_ids)
    kept = ("schema", "source", "action", "dedup_key", "kind", "severity", "opened_at")
    # the runbook stays: the reduced form is still a page someone answers
    payload: dict[str, Any] = {
        key: full.payload[key] for key in (*kept, "runbook_url", "links") if key in full.payload
    }
    payload |= {
        "incident_id": full.incident_id,
        "incident_ids": ids[:_REDUCED_IDS],
        "incidents_total": len(ids),
        "tasks_total": full.payload["tasks_total"],
        "sent_at": now,
        "subject": full.subject,
        "reduced": True,
        "text": text,
    }
    return replace(full, text=text, payload=payload)
