"""The report as a readable table (the CLI without --json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oomcheck.detect.text import utc
from oomcheck.model import Severity
from oomcheck.report.document import AlertRecord, Report, source_text
from oomcheck.report.schedule import schedule_table

_MARK = {Severity.CRITICAL: "CRIT", Severity.WARNING: "WARN", Severity.INFO: "info"}


def render_table(report: Report) -> str:
    lines = [
        f"oomcheck {report.mode.value} at {utc(report.checked_at)} in {report.duration_ms} ms",
        "sources: " + ", ".join(f"{k} {source_text(v)}" for k, v in report.sources.items()),
        "",
    ]
    lines.append(f"{'WORKER':<40} {'STATUS':<9} {'PID':>8} {'UPTIME':>8} {'ACTIVE':>6}  POOL")
    for row in report.workers:
        uptime = "-" if row["uptime_s"] is None else f"{row['uptime_s']}s"
        pid = "-" if row["pid"] is None else row["pid"]  # Celery on SQS: no worker to ask
        pool = ",".join(str(p) for p in row["pool_pids"][:8])
        lines.append(
            f"{row['name'][:40]:<40} {row['status']:<9} {pid:>8} {uptime:>8} "
            f"{row['active']:>6}  {pool}"
        )
    if not report.workers:
        lines.append("(no workers answered and none are remembered)")
    lines.append("")
    if report.findings:
        lines.append("FINDINGS")
        for finding in report.findings:
            lines.append(f"  {_MARK[finding.severity]} {finding.kind.value:<18} {finding.summary}")
            silence = report.silenced.get(finding.incident_id or "")
            if silence is not None:
                lines.append(f"      silenced by {silence}: its alert waits until the silence ends")
            for fate in finding.tasks[:10]:
                lines.append(
                    f"       task {fate.name or '?'} [{fate.id}] {fate.state} -> "
                    f"{fate.verdict.value}"
                )
    else:
        lines.append("no findings")
    lines += _memory_table(report.memory)
    lines += _queue_table(report.queues)
    lines += schedule_table(report.schedule)
    lines += history_table(report.history)
    if report.alerts:
        lines.append("")
        lines.append("ALERTS")
        for alert in report.alerts:
            how = _delivery(alert)
            lines.append(f"  {alert.action:<8} {alert.incident_id} {how}: {alert.subject}")
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


def history_table(history: Mapping[str, Any] | None) -> list[str]:
    """The audit's top task types by kills (the README's "top killers" table) and the workers
    whose memory is rising."""
    if history is None:
        return []
    days = history["since_s"] / 86400
    lines = [
        "",
        f"{f'TOP TASK TYPES BY KILLS (last {days:g} days)':<40} {'DEATHS':>6} {'KILLED':>6} "
        f"{'LOST':>5} {'PEAK MEM':>8}  CAUSES",
    ]
    for row in history["tasks"]:
        peak = "-" if row["peak_share"] is None else f"{row['peak_share']:.0%}"
        causes = ", ".join(f"{cause} {n}" for cause, n in row["by_cause"].items()) or "-"
        if row["pressure_onsets"]:
            causes += f"; memory pressure began under it {row['pressure_onsets']}x"
        lines.append(
            f"{row['task'][:40]:<40} {row['deaths']:>6} {row['tasks_killed']:>6} "
            f"{row['lost']:>5} {peak:>8}  {causes}"
        )
        lines.append(f"{'':<6}do: {row['advice'][0]}")
        lines.extend(f"{'':<6}    {line}" for line in row["advice"][1:])
    if not history["tasks"]:
        lines.append("(no task died in this window)")
    for row in history["rising_memory"]:
        lines.append(
            f"rising memory: {row['worker']} {row['used_mb']:,.0f} of {row['limit_mb']:,.0f} MiB, "
            f"{row['trend_mb_per_min']:+,.0f} MB/min"
        )
    return lines


def _delivery(alert: AlertRecord) -> str:
    if alert.published:
        return "published"
    if alert.printed:
        return "printed (no topic)"
    return f"NOT published ({alert.error})"
