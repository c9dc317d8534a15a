"""Alerts: what a person on call reads (email), what a machine reads (JSON), and their delivery.

Rendering and the outbox transitions (mark_sent / mark_failed) are pure; SnsAlerter is the thin
adapter. An alert is marked sent only after SNS accepted it; a failed publish stays pending in the
incident and is retried by the next run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from oomcheck.codec import MAX_TASKS, finding_to_json
from oomcheck.model import Action, Finding, Incident, Severity, State
from oomcheck.text import cause_suffix, fate_line, utc

SUBJECT_MAX = 99  # SNS: under 100 characters, no newlines
# Leave room under SNS's 256 KiB for the JSON envelope of the per-protocol messages.
TEXT_MAX = 60_000


@dataclass(frozen=True, slots=True)
class AlertMessage:
    incident_id: str
    action: Action
    kind: str
    severity: str
    subject: str
    text: str
    payload: dict[str, Any]


class Publisher(Protocol):
    def publish(self, message: AlertMessage) -> str: ...

    def describe(self) -> str: ...


class PublishError(RuntimeError):
    pass


_HEADLINES = {
    "worker_lost": "{worker} died{cause}",
    "worker_restarted": "{worker} restarted{cause}",
    "child_killed": "pool process killed{cause} on {worker}",
    "task_orphaned": "tasks orphaned on {worker}",
    "task_stalled": "task stalled on {worker}",
    "poison_task": "poison task in a kill loop{cause}",
    "oom_kill": "OOM kill on an unknown worker",
    "source_unavailable": "a source is unavailable",
}


def subject_for(finding: Finding, action: Action) -> str:
    headline = _HEADLINES.get(finding.kind.value, finding.kind.value).format(
        worker=finding.worker or "unknown worker",
        cause=cause_suffix(finding.cause, finding.exit_code),
    )
    if finding.tasks and finding.kind.value in (
        "worker_lost",
        "worker_restarted",
        "child_killed",
        "task_orphaned",
    ):
        headline += f", {len(finding.tasks)} task(s)"
    if finding.kind.value == "poison_task" and finding.tasks:
        headline += f": {finding.tasks[0].name or finding.tasks[0].id}"
    prefix = {
        Action.OPEN: f"[oomcheck] {finding.severity.value.upper()}: ",
        Action.UPDATE: f"[oomcheck] UPDATE {finding.severity.value.upper()}: ",
        Action.REMIND: f"[oomcheck] STILL OPEN {finding.severity.value.upper()}: ",
        Action.RESOLVE: "[oomcheck] RESOLVED: ",
    }[action]
    subject = " ".join((prefix + headline).split())  # no newlines or runs of blanks
    subject = subject.encode("ascii", "replace").decode("ascii")
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 3].rstrip() + "..."
    return subject


def render_text(incident: Incident, action: Action, now: float) -> str:
    finding = incident.finding
    lines: list[str] = []
    if action == Action.RESOLVE:
        lines += ["RESOLVED", f"  {incident.resolution or 'the condition is gone'}", ""]
        lines += [f"What happened: {finding.summary}", ""]
    elif action == Action.REMIND:
        lines += [
            f"STILL OPEN since {utc(incident.opened_at)} "
            f"({(now - incident.opened_at) / 60:.0f} min)",
            f"  {finding.summary}",
            "",
        ]
    else:
        lines += ["WHAT HAPPENED", f"  {finding.summary}", ""]
    lines += [
        f"  Kind:       {finding.kind.value} ({finding.severity.value})",
        f"  Worker:     {finding.worker or 'unknown'}",
        f"  Cause:      {finding.cause.value}"
        + (f" (exit code {finding.exit_code})" if finding.exit_code is not None else ""),
        f"  First seen: {utc(incident.opened_at)}",
        f"  Incident:   {incident.id}",
        "",
    ]
    if finding.tasks:
        lines.append(f"TASKS ({len(finding.tasks)})")
        lines += [fate_line(f) for f in finding.tasks[:MAX_TASKS]]
        if len(finding.tasks) > MAX_TASKS:
            lines.append(f"  ... and {len(finding.tasks) - MAX_TASKS} more (see the JSON)")
        lines.append("")
    if finding.evidence:
        lines.append("EVIDENCE")
        lines += [f"  - {e}" for e in finding.evidence]
        lines.append("")
    if finding.advice and action != Action.RESOLVE:
        lines.append("WHAT TO DO")
        lines += [f"  {i}. {a}" for i, a in enumerate(finding.advice, 1)]
        lines.append("")
    lines.append(
        f"-- oomcheck, {utc(now)}. One alert per incident; a reminder while it stays open, "
        "a notice when it is resolved."
    )
    text = "\n".join(lines)
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 20] + "\n... (truncated)"


def render(incident: Incident, action: Action, now: float) -> AlertMessage:
    text = render_text(incident, action, now)
    subject = subject_for(incident.finding, action)
    severity = Severity.INFO.value if action == Action.RESOLVE else incident.finding.severity.value
    payload = {
        "schema": 1,
        "source": "oomcheck",
        "action": action.value,
        "incident_id": incident.id,
        "kind": incident.kind.value,
        "severity": severity,
        "opened_at": incident.opened_at,
        "closed_at": incident.closed_at,
        "resolution": incident.resolution if action == Action.RESOLVE else None,
        "sent_at": now,
        "subject": subject,
        "finding": finding_to_json(incident.finding),
        "text": text,
    }
    return AlertMessage(
        incident_id=incident.id,
        action=action,
        kind=incident.kind.value,
        severity=severity,
        subject=subject,
        text=text,
        payload=payload,
    )


def due(state: State) -> list[tuple[Incident, Action]]:
    """The first pending alert of each incident, oldest incident first (order matters: an open
    must go out before its resolve)."""
    out = []
    for incident in sorted(state.incidents.values(), key=lambda i: (i.opened_at, i.id)):
        if incident.pending:
            out.append((incident, incident.pending[0].action))
    return out


def mark_sent(state: State, incident_id: str, action: Action, now: float) -> State:
    incident = state.incidents[incident_id]
    if not incident.pending or incident.pending[0].action != action:
        return state
    updated = replace(
        incident,
        pending=incident.pending[1:],
        last_alert_at=now,
        alerts_sent=incident.alerts_sent + 1,
    )
    return replace(state, incidents={**state.incidents, incident_id: updated})


def mark_failed(state: State, incident_id: str, action: Action, error: str) -> State:
    incident = state.incidents[incident_id]
    if not incident.pending or incident.pending[0].action != action:
        return state
    head = incident.pending[0]
    head = replace(head, attempts=head.attempts + 1, last_error=error[:300])
    updated = replace(incident, pending=(head, *incident.pending[1:]))
    return replace(state, incidents={**state.incidents, incident_id: updated})


# ------------------------------------------------------------------------------ SNS


class SnsAlerter:
    def __init__(self, topic_arn: str, client: Any | None = None) -> None:
        if client is None:
            from oomcheck.aws import client as make_client

            client = make_client("sns")
        self.topic_arn = topic_arn
        self.client = client

    def describe(self) -> str:
        return f"sns:{self.topic_arn}"

    def publish(self, message: AlertMessage) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        machine = json.dumps(message.payload, separators=(",", ":"), default=str)
        body = {
            "default": message.text,
            "email": message.text,
            "email-json": machine,
            "sqs": machine,
            "lambda": machine,
            "http": machine,
            "https": machine,
            "firehose": machine,
        }
        try:
            reply = self.client.publish(
                TopicArn=self.topic_arn,
                Subject=message.subject,
                Message=json.dumps(body),
                MessageStructure="json",
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": message.kind},
                    "severity": {"DataType": "String", "StringValue": message.severity},
                    "action": {"DataType": "String", "StringValue": message.action.value},
                },
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise PublishError(f"sns publish: {code}") from exc
        except BotoCoreError as exc:
            raise PublishError(f"sns publish: {type(exc).__name__}") from exc
        return str(reply.get("MessageId", ""))


class PrintAlerter:
    """No topic configured: alerts go to a stream (the CLI prints them) and the report."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def describe(self) -> str:
        return "printed (no topic configured)"

    def publish(self, message: AlertMessage) -> str:
        rule = "=" * 72
        self.write(f"{rule}\nSubject: {message.subject}\n\n{message.text}\n{rule}\n")
        return "printed"
