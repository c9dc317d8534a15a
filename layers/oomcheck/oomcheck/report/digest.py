"""The weekly digest (an optional second schedule): one message with the week's deaths, the top
task types, the tasks lost, and the trend against the week before (pure: state in, message out).

It goes to the alert topic as one SNS message: text for email, JSON (``"schema": 1,
"digest": {...}``) for every other protocol, with the attributes ``kind=digest``,
``severity=info``, ``action=digest`` so a subscription filter can take or leave it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oomcheck.alerting.render import SNS_MAX_BYTES, request_size
from oomcheck.model import MemoryPoint, TaskHistory
from oomcheck.report.history import Tally, rising_rows, task_row, top_task_types

WEEK = 7 * 86400.0
TOP = 5
# SNS: a subject of at most 100 ASCII characters, no line breaks
SUBJECT_MAX = 100


@dataclass(frozen=True, slots=True)
class Week:
    deaths: int  # distinct deaths (incidents) that killed at least one task
    tasks_killed: int
    lost: int
    redelivered: int
    by_cause: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Digest:
    target: str
    start: float
    end: float
    this: Week
    previous: Week
    top: tuple[Tally, ...]
    rising: tuple[dict[str, Any], ...]

    @property
    def trend(self) -> str:
        a, b = self.this.deaths, self.previous.deaths
        if a == b:
            return "same as the week before" if a else "none this week or the week before"
        if b == 0:
            return "up from none the week before"
        change = (a - b) / b
        return f"{'up' if a > b else 'down'} {abs(change):.0%} from {b} the week before"

    def subject(self) -> str:
        what = f"{self.this.deaths} death(s), {self.this.lost} task(s) lost, {self.trend}"
        text = f"[oomcheck] weekly digest {self.target}: {what}"
        text = " ".join(text.split()).encode("ascii", "replace").decode()
        return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."


def _week(history: Mapping[str, TaskHistory], since: float, until: float) -> Week:
    incidents: set[str] = set()
    causes: dict[str, str] = {}
    killed = lost = redelivered = 0
    for h in history.values():
        for d in h.deaths:
            if since <= d.at < until:
                incidents.add(d.incident_id)
                causes[d.incident_id] = d.cause.value
                killed += d.victims
                lost += d.lost
                redelivered += d.redelivered
    return Week(
        deaths=len(incidents),
        tasks_killed=killed,
        lost=lost,
        redelivered=redelivered,
        by_cause=dict(sorted(Counter(causes.values()).items())),
    )


def build(
    history: Mapping[str, TaskHistory],
    pressure: Mapping[str, tuple[MemoryPoint, ...]],
    target: str,
    now: float,
    running: Collection[str] | None = None,
) -> Digest:
    start = now - WEEK
    return Digest(
        target=target,
        start=start,
        end=now,
        this=_week(history, start, now),
        previous=_week(history, start - WEEK, start),
        top=tuple(top_task_types(history, start, now, TOP)),
        rising=tuple(rising_rows(pressure, running)[:TOP]),
    )


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%a %d %b %Y")


def text(digest: Digest) -> str:
    this = digest.this
    causes = ", ".join(f"{n} {c}" for c, n in this.by_cause.items()) or "none"
    lines = [
        f"oomcheck weekly digest for {digest.target}: {_day(digest.start)} to {_day(digest.end)}",
        "",
        f"DEATHS  {this.deaths} ({causes}); {digest.trend}",
        f"TASKS   {this.tasks_killed} killed: {this.lost} lost, {this.redelivered} redelivered",
        "",
        "TOP TASK TYPES BY KILLS",
    ]
    for t in digest.top:
        peak = "" if t.peak_share is None else f", memory peaked at {t.peak_share:.0%}"
        lines.append(f"  {t.name}: {t.deaths} death(s), {t.victims} killed, {t.lost} lost{peak}")
        lines.append(f"    do: {task_row(t)['advice'][0]}")
    if not digest.top:
        lines.append("  (no task died this week)")
    if digest.rising:
        lines += ["", "RISING MEMORY NOW"]
        lines += [
            f"  {r['worker']}: {r['used_mb']:,.0f} of {r['limit_mb']:,.0f} MiB, "
            f"{r['trend_mb_per_min']:+,.0f} MB/min"
            for r in digest.rising
        ]
    lines += ["", "Details: oomcheck audit --since 7d (or the dashboard)."]
    return "\n".join(lines)


def payload(digest: Digest) -> dict[str, Any]:
    def week(w: Week) -> dict[str, Any]:
        return {
            "deaths": w.deaths,
            "by_cause": dict(w.by_cause),
            "tasks_killed": w.tasks_killed,
            "lost": w.lost,
            "redelivered": w.redelivered,
        }

    return {
        "schema": 1,
        "digest": {
            "target": digest.target,
            "start": digest.start,
            "end": digest.end,
            "week": week(digest.this),
            "previous_week": week(digest.previous),
            "trend": digest.trend,
            "top_tasks": [task_row(t) for t in digest.top],
            "rising_memory": list(digest.rising),
        },
    }


def sns_request(digest: Digest) -> dict[str, Any]:
    """Publish arguments, as an alert's: text for email, JSON for machines. Five task types and
    five workers at most: far within SNS's 256 KiB (PublishError says so otherwise)."""
    body_text = text(digest)
    machine = json.dumps(payload(digest), separators=(",", ":"), default=str)
    week_id = datetime.fromtimestamp(digest.end, tz=UTC).strftime("%G-W%V")
    attributes = {
        "kind": "digest",
        "severity": "info",
        "action": "digest",
        "dedup_key": f"digest:{digest.target}:{week_id}",
    }
    return {
        "Subject": digest.subject(),
        "Message": json.dumps({"default": machine, "email": body_text}, separators=(",", ":")),
        "MessageStructure": "json",
        "MessageAttributes": {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        },
    }


def fits(request: Mapping[str, Any]) -> bool:
    subject = str(request["Subject"])
    return (
        request_size(dict(request)) <= SNS_MAX_BYTES
        and len(subject) <= SUBJECT_MAX
        and subject.isascii()
        and "\n" not in subject
    )
