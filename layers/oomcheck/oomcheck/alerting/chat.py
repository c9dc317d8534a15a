"""Chat: an alert as Amazon Q Developer in chat applications (formerly AWS Chatbot) renders it.

A chat channel subscribed to an SNS topic renders only messages in its custom-notification
schema (version "1.0", source "custom", content, metadata); anything else shows as raw text or
not at all. So chat gets a topic of its own with this shape on it, and the alert topic keeps the
email text and the machine JSON (oomcheck.alerting.render).

Pure: built from the rendered AlertMessage (its JSON payload is the contract, the reduced form
included). Updates, reminders and the resolve of an incident carry its id as the thread id, so
they land in one thread; a grouped open threads on its first incident (the one its payload's
``incident_id`` names), and each member is then reminded and resolved in a thread of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from oomcheck.alerting.render import WHERE_TO_READ, AlertMessage
from oomcheck.detect.text import GONE, cause_words, utc
from oomcheck.model import Action, Cause, Severity

__all__ = ["DESCRIPTION_MAX", "TITLE_MAX", "chat_message", "chat_request"]

# The schema sets no field limits of its own beyond SNS's 256 KiB; these keep a notification
# readable in Slack (whose section text stops at 3,000 characters) and in Microsoft Teams (whose
# cards stop near 28 KB), where the full detail is one `oomcheck audit` away.
TITLE_MAX = 250
DESCRIPTION_MAX = 2_800
SUMMARY_MAX = 250
STEPS_MAX, STEP_CHARS = 5, 300
KEYWORDS_MAX, KEYWORD_CHARS = 6, 50
WORKERS_LISTED = 10
RESOURCES_MAX = 20

_SEVERITY_ICONS = {
    Severity.CRITICAL: "\N{POLICE CARS REVOLVING LIGHT}",
    Severity.WARNING: "\N{WARNING SIGN}",
}
_ACTION_ICONS = {
    Action.UPDATE: "\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}",
    Action.REMIND: "\N{HOURGLASS WITH FLOWING SAND}",
    Action.RESOLVE: "\N{WHITE HEAVY CHECK MARK}",
}
_SUBJECT_PREFIX = "[oomcheck] "


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"


def _code(text: object) -> str:
    """An identifier as inline code; a backtick in it would end the span early."""
    return "`" + str(text).replace("`", "'") + "`"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _title(message: AlertMessage) -> str:
    icon = _ACTION_ICONS.get(message.action) or _SEVERITY_ICONS.get(
        message.severity, "\N{INFORMATION SOURCE}"
    )
    return _clip(f"{icon} oomcheck {message.subject.removeprefix(_SUBJECT_PREFIX)}", TITLE_MAX)


def _fates(finding: Mapping[str, Any], total: int) -> str:
    tasks = [_mapping(t) for t in finding.get("tasks") or ()]
    if not total:
        return ""
    if len(tasks) != total:  # listed in part: the counts would mislead
        return f"{total}"
    counts: dict[str, int] = {}
    for task in tasks:
        verdict = str(task.get("verdict") or "unknown").replace("_", " ")
        counts[verdict] = counts.get(verdict, 0) + 1
    return f"{total} ({', '.join(f'{n} {v}' for v, n in sorted(counts.items()))})"


def _one(payload: Mapping[str, Any], finding: Mapping[str, Any]) -> list[str]:
    code = finding.get("exit_code")
    try:
        cause = cause_words(
            Cause(str(finding.get("cause"))), code if isinstance(code, int) else None
        )
        cause = cause or "unknown"
    except ValueError:  # a cause this version does not know: its name, as the JSON has it
        cause = str(finding.get("cause"))
    lines = [
        f"Worker: {_code(finding.get('worker') or 'unknown')}",
        f"Cause: {cause}",
    ]
    tasks = _fates(finding, int(payload.get("tasks_total") or 0))
    if tasks:
        lines.append(f"Tasks: {tasks}")
    return lines


def _group(members: list[Mapping[str, Any]]) -> list[str]:
    lines = [f"Workers ({len(members)}), each its own incident:"]
    for member in members[:WORKERS_LISTED]:
        finding = _mapping(member.get("finding"))
        worker = _code(finding.get("worker") or "unknown")
        lines.append(f"\N{BULLET} {worker} {_code(member.get('incident_id', ''))}")
    if len(members) > WORKERS_LISTED:
        lines.append(f"\N{BULLET} and {len(members) - WORKERS_LISTED} more")
    return lines


def _description(message: AlertMessage) -> str:
    payload = message.payload
    finding = _mapping(payload.get("finding"))
    members = [_mapping(m) for m in payload.get("incidents") or ()]
    lines: list[str] = []
    if message.action is Action.RESOLVE:
        lines.append(f"Resolved: {payload.get('resolution') or GONE}")
    elif message.action is Action.UPDATE and payload.get("note"):
        lines.append(f"Update: {payload['note']}")
    elif message.action is Action.REMIND:
        lines.append(f"Still open since {utc(payload.get('opened_at'))}")
    if finding.get("summary"):
        lines.append(str(finding["summary"]))
    if payload.get("runbook_url"):  # early: a shortened description keeps it
        lines.append(f"Runbook: {payload['runbook_url']}")
    if len(members) > 1:
        lines += _group(members)
    elif finding:
        lines += _one(payload, finding)
    else:  # the reduced form: counts and ids only
        total = int(payload.get("incidents_total") or len(message.incident_ids) or 1)
        lines.append(f"Incidents: {total}, tasks: {payload.get('tasks_total', 0)}")
    lines.append(f"Incident: {_code(message.incident_id)} (thread of this incident's alerts)")
    lines.append(f"Full detail: {WHERE_TO_READ}.")
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_MAX:
        tail = f"\n\N{HORIZONTAL ELLIPSIS} (shortened; {WHERE_TO_READ})"
        text = text[: DESCRIPTION_MAX - len(tail)].rstrip() + tail
    return text


def _next_steps(message: AlertMessage) -> list[str]:
    if message.action is Action.RESOLVE:
        return []
    advice = _mapping(message.payload.get("finding")).get("advice") or ()
    return [_clip(str(step), STEP_CHARS) for step in list(advice)[:STEPS_MAX]]


def _keywords(message: AlertMessage) -> list[str]:
    words = (message.kind.value, message.severity.value, message.action.value)
    return [_clip(w, KEYWORD_CHARS) for w in words if w][:KEYWORDS_MAX]


def chat_message(message: AlertMessage) -> dict[str, Any]:
    """The custom notification for ``message``: what the channel shows (content) and how it
    threads and filters (metadata)."""
    members = [_mapping(m) for m in message.payload.get("incidents") or ()]
    workers = [str(_mapping(m.get("finding")).get("worker") or "") for m in members]
    return {
        "version": "1.0",
        "source": "custom",
        "id": message.dedup_key,
        "content": {
            "textType": "client-markdown",
            "title": _title(message),
            "description": _description(message),
            "nextSteps": _next_steps(message),
            "keywords": _keywords(message),
        },
        "metadata": {
            "threadId": message.incident_id,
            "summary": _clip(message.subject, SUMMARY_MAX),
            "eventType": f"oomcheck.{message.action.value}",
            "relatedResources": [w for w in workers if w][:RESOURCES_MAX],
            "additionalContext": {
                "kind": message.kind.value,
                "severity": message.severity.value,
                "action": message.action.value,
                "dedup_key": message.dedup_key,
                "incident_ids": ",".join(message.incident_ids)[:1000],
            },
        },
    }


def chat_request(message: AlertMessage) -> dict[str, Any]:
    """Publish arguments for the chat topic: the notification as the one body every protocol
    gets, and the same filterable attributes as the alert topic."""
    attributes = {
        "kind": message.kind.value,
        "severity": message.severity.value,
        "action": message.action.value,
        "dedup_key": message.dedup_key,
    }
    return {
        "Subject": message.subject,
        "Message": json.dumps(chat_message(message), ensure_ascii=False, separators=(",", ":")),
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }
