"""The report of one run: the JSON contract (README, "Report JSON") and a readable table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oomcheck.codec import finding_to_json, incident_to_json
from oomcheck.model import (
    Finding,
    Incident,
    Severity,
    SourceStatus,
    WorkerRecord,
    WorkerSnapshot,
    WorkerStatus,
)
from oomcheck.text import utc

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class AlertRecord:
    incident_id: str
    kind: str
    action: str
    subject: str
    published: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SettingOrigin:
    """A setting as the report shows it (passwords masked) and where it came from: ``app``,
    ``env OOMCHECK_BROKER_URL``, ``flag --broker``, ``default``..."""

    value: str | float | None
    source: str


@dataclass(frozen=True, slots=True)
class Report:
    mode: str
    checked_at: float
    duration_ms: int
    workers: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    sources: Mapping[str, str]
    stats: Mapping[str, int]
    alerts: tuple[AlertRecord, ...] = ()
    incidents: tuple[Incident, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # the CLI's: the Celery-side settings and their sources (empty in Lambda)
    settings: Mapping[str, SettingOrigin] = field(default_factory=dict)
    # the top memory users and every queue measured (oomcheck.usage); None: the source is off
    # or failed this run
    memory: tuple[dict[str, Any], ...] | None = None
    queues: tuple[dict[str, Any], ...] | None = None

    @property
    def exit_code(self) -> int:
        """2 = an open critical/warning finding; else 1 when the workers could not be asked at
        all (the check did not really run); else 0."""
        if any(f.alertable for f in self.findings):
            return 2
        return 1 if self.sources.get("inspect", "ok").startswith("error") else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "mode": self.mode,
            "checked_at": datetime.fromtimestamp(self.checked_at, tz=UTC).isoformat(),
            "duration_ms": self.duration_ms,
            "workers": list(self.workers),
            "findings": [finding_to_json(f) for f in self.findings],
            "sources": dict(self.sources),
            "stats": dict(self.stats),
            "alerts": [
                {
                    "incident_id": a.incident_id,
                    "kind": a.kind,
                    "action": a.action,
                    "subject": a.subject,
                    "published": a.published,
                    **({"error": a.error} if a.error else {}),
                }
                for a in self.alerts
            ],
        }
        if self.mode == "audit":
            out["incidents"] = [incident_to_json(i) for i in self.incidents]
        if self.memory is not None:
            out["memory"] = list(self.memory)
        if self.queues is not None:
            out["queues"] = list(self.queues)
        if self.notes:
            out["notes"] = list(self.notes)
        if self.settings:
            out["settings"] = {
                name: {"value": s.value, "from": s.source} for name, s in self.settings.items()
            }
        return out


def source_texts(statuses: Mapping[str, SourceStatus | str]) -> dict[str, str]:
    """The report's ``"sources"``: ``"ok"``, ``"error: ..."``, ``"off: ..."``, ``"busy: ..."``
    (the alerts entry is already text: the publisher's description)."""
    return {name: str(status) for name, status in statuses.items()}


def worker_rows(
    live: Mapping[str, WorkerSnapshot] | None, roster: Mapping[str, WorkerRecord]
) -> tuple[dict[str, Any], ...]:
    rows: dict[str, dict[str, Any]] = {}
    for name, record in roster.items():
        rows[name] = {
            "name": name,
            "pid": record.pid,
            "uptime_s": None,
            "pool_pids": list(record.pool_pids),
            "active": len(record.active),
            "status": record.status.value,
        }
    for name, snap in (live or {}).items():
        rows[name] = {
            "name": name,
            "pid": snap.pid,
            "uptime_s": round(snap.uptime_s),
            "pool_pids": list(snap.pool_pids),
            "active": len(snap.active or ()),
            "status": WorkerStatus.ALIVE.value,
        }
    return tuple(rows[n] for n in sorted(rows))


_MARK = {Severity.CRITICAL: "CRIT", Severity.WARNING: "WARN", Severity.INFO: "info"}


def render_table(report: Report) -> str:
    lines = [
        f"oomcheck {report.mode} at {utc(report.checked_at)} in {report.duration_ms} ms",
        "sources: " + ", ".join(f"{k} {v}" for k, v in report.sources.items()),
        "",
    ]
    lines.append(f"{'WORKER':<40} {'STATUS':<9} {'PID':>8} {'UPTIME':>8} {'ACTIVE':>6}  POOL")
    for row in report.workers:
        uptime = "-" if row["uptime_s"] is None else f"{row['uptime_s']}s"
        pool = ",".join(str(p) for p in row["pool_pids"][:8])
        lines.append(
            f"{row['name'][:40]:<40} {row['status']:<9} {row['pid']:>8} {uptime:>8} "
            f"{row['active']:>6}  {pool}"
        )
    if not report.workers:
        lines.append("(no workers answered and none are remembered)")
    lines.append("")
    if report.findings:
        lines.append("FINDINGS")
        for finding in report.findings:
            lines.append(f"  {_MARK[finding.severity]} {finding.kind.value:<18} {finding.summary}")
            for fate in finding.tasks[:10]:
                lines.append(
                    f"       task {fate.name or '?'} [{fate.id}] {fate.state} -> "
                    f"{fate.verdict.value}"
                )
    else:
        lines.append("no findings")
    lines += _memory_table(report.memory)
    lines += _queue_table(report.queues)
    if report.alerts:
        lines.append("")
        lines.append("ALERTS")
        for alert in report.alerts:
            status = "published" if alert.published else f"NOT published ({alert.error})"
            lines.append(f"  {alert.action:<8} {alert.incident_id} {status}: {alert.subject}")
    for note in report.notes:
        lines.append(f"note: {note}")
    for name, setting in report.settings.items():
        if setting.source != "default":
            lines.append(f"setting {name}: {setting.value} (from {setting.source})")
    stats = ", ".join(f"{k}={v}" for k, v in report.stats.items())
    lines.append(f"stats: {stats}")
    return "\n".join(lines)


def _memory_table(rows: tuple[dict[str, Any], ...] | None) -> list[str]:
    if rows is None:
        return []
    lines = ["", f"{'MEMORY (top users)':<40} {'USED MiB':>9} {'LIMIT':>9} {'SHARE':>6}  RUNNING"]
    for row in rows:
        limit = "-" if row["limit_mb"] is None else f"{row['limit_mb']:,.0f}"
        share = "-" if row["share"] is None else f"{row['share']:.0%}"
        tasks = ", ".join(
            f"{t['name'] or '?'} [{t['id']}]"
            + (f" {t['running_s']}s" if t["running_s"] is not None else "")
            for t in row["tasks"][:3]
        )
        basis = "" if row["basis"] == "hard limit" else f" (of {row['basis']})"
        lines.append(
            f"{row['worker'][:40]:<40} {row['used_mb']:>9,.0f} {limit:>9} {share:>6}  "
            f"{tasks or '-'}{basis}"
        )
    if not rows:
        lines.append("(no memory sample matched a worker this run)")
    return lines


def _queue_table(rows: tuple[dict[str, Any], ...] | None) -> list[str]:
    if rows is None:
        return []
    lines = ["", f"{'QUEUE':<40} {'MESSAGES':>9} {'OLDEST':>8}  CONSUMERS"]
    for row in rows:
        oldest = "-" if row["oldest_s"] is None else f"{row['oldest_s']}s"
        who = ", ".join(row["consumers"][:4]) or "NONE"
        if row["broker_consumers"] is not None:
            who += f" (broker counts {row['broker_consumers']})"
        lines.append(f"{row['name'][:40]:<40} {row['messages']:>9,} {oldest:>8}  {who}")
    if not rows:
        lines.append("(no queue measured)")
    return lines
