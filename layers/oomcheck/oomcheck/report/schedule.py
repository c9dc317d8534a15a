"""The report's schedule block: each periodic entry beat keeps, when it last ran, when it is next
due and whether it is late (the beat source's read, as the beat family judges it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oomcheck.detect.rules.beat import missed_runs
from oomcheck.model import BeatSchedule


def schedule_rows(
    schedule: BeatSchedule, now: float, grace_s: float, *, late_only: bool = False
) -> tuple[dict[str, Any], ...]:
    """One row per entry (``late_only``: per late entry), by name. ``late``: due more than
    ``grace_s`` ago and enabled (what beat_stopped counts); ``missed``: the runs it missed."""
    rows: list[dict[str, Any]] = []
    for entry in schedule.entries:
        due = entry.next_due_at
        late = entry.enabled and due is not None and now - due > grace_s
        if late_only and not late:
            continue
        rows.append(
            {
                "name": entry.name,
                "task": entry.task,
                "schedule": entry.schedule,
                "interval_s": entry.period_s,
                "enabled": entry.enabled,
                "last_run_at": _iso(entry.last_run_at),
                "next_due_at": _iso(due),
                "total_run_count": entry.total_run_count,
                "late": late,
                "late_s": round(now - due) if late and due is not None else None,
                "missed": missed_runs(entry, now) if late else 0,
            }
        )
    return tuple(rows)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def schedule_table(rows: tuple[dict[str, Any], ...] | None) -> list[str]:
    if rows is None:
        return []
    lines = ["", f"{'BEAT ENTRY':<32} {'SCHEDULE':<22} {'LAST RUN':<9} {'NEXT DUE':<9} STATE"]
    for row in rows:
        state = (
            "disabled"
            if not row["enabled"]
            else f"LATE {row['late_s']}s, {row['missed']} missed"
            if row["late"]
            else "ok"
        )
        lines.append(
            f"{row['name'][:32]:<32} {row['schedule'][:22]:<22} {_hms(row['last_run_at']):<9} "
            f"{_hms(row['next_due_at']):<9} {state}"
        )
    if not rows:
        lines.append("(no entry in the schedule)")
    return lines


def _hms(iso: str | None) -> str:
    return "-" if iso is None else iso[11:19]
