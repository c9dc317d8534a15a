"""The checker's metrics (CloudWatch EMF through Powertools): what each run says in numbers.

Low cardinality, since CloudWatch charges per metric (name + dimension values): dimensions are
the target, a finding kind, a cause or a source name; task names and queues travel in the EMF
metadata, never as dimensions. Event counts (deaths, kills, victims, pressure episodes) are
emitted only when not zero, so they cost only in the hours they happen; gauges (open incidents,
queues without consumers) every run.

``CATALOG`` is the contract: the handler emits only these (``tests/template`` checks the
dashboard draws only these, with these dimensions). The run-level metrics the handler has always
emitted carry Powertools' ``service`` dimension (the stack's name), as the alarms expect.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from oomcheck.detect.text import utc
from oomcheck.model import Mode, Verdict
from oomcheck.report.document import Report
from oomcheck.report.events import RunEvents

COUNT = "Count"
MILLISECONDS = "Milliseconds"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    unit: str
    dimensions: tuple[str, ...]


_SERVICE = ("service",)
CATALOG: Mapping[str, MetricSpec] = {
    # run level (the handler's Metrics object; the alarms watch two of them)
    "WorkersAlive": MetricSpec(COUNT, _SERVICE),
    "WorkersLost": MetricSpec(COUNT, _SERVICE),
    "Findings": MetricSpec(COUNT, _SERVICE),
    "AlertsPublished": MetricSpec(COUNT, _SERVICE),
    "AlertsFailed": MetricSpec(COUNT, _SERVICE),
    "AlertsUndeliverable": MetricSpec(COUNT, _SERVICE),
    "SourceErrors": MetricSpec(COUNT, _SERVICE),
    "StateWrites": MetricSpec(COUNT, _SERVICE),
    "RunDuration": MetricSpec(MILLISECONDS, _SERVICE),
    # what a team asks (issue 21): per monitored app
    "WorkerDeaths": MetricSpec(COUNT, ("target", "cause")),
    "ChildKills": MetricSpec(COUNT, ("target", "cause")),
    "TasksLost": MetricSpec(COUNT, ("target",)),
    "TasksRedelivered": MetricSpec(COUNT, ("target",)),
    "TasksInKillLoop": MetricSpec(COUNT, ("target",)),
    "TasksDeadLettered": MetricSpec(COUNT, ("target",)),
    "MemoryPressureEpisodes": MetricSpec(COUNT, ("target",)),
    "OpenIncidents": MetricSpec(COUNT, ("target",)),
    "OpenIncidentsByKind": MetricSpec(COUNT, ("target", "kind")),
    "QueuesWithoutConsumers": MetricSpec(COUNT, ("target",)),
    "MessagesWithoutConsumers": MetricSpec(COUNT, ("target",)),
    "SourceFailing": MetricSpec(COUNT, ("target", "source")),
    # only for the task names OOMCHECK_METRIC_TASKS lists (each name is a metric of its own)
    "TaskDeaths": MetricSpec(COUNT, ("target", "task")),
}
RUN_LEVEL = tuple(name for name, spec in CATALOG.items() if spec.dimensions == _SERVICE)
# emitted by every check, whatever happened (the rest only when not zero, or with their source)
ALWAYS = (*RUN_LEVEL, "OpenIncidents")


@dataclass(frozen=True, slots=True)
class MetricPoint:
    name: str
    value: float
    dimensions: Mapping[str, str]

    @property
    def unit(self) -> str:
        return CATALOG[self.name].unit


@dataclass(frozen=True, slots=True)
class MetricBlob:
    """Metrics that share their dimension values: one EMF document."""

    dimensions: Mapping[str, str]
    points: tuple[MetricPoint, ...]
    metadata: Mapping[str, object] = field(default_factory=dict)


def run_level(report: Report) -> dict[str, float]:
    """The nine run-level metrics (``service`` dimension), as the handler has always sent them."""
    return {
        "WorkersAlive": sum(1 for w in report.workers if w["status"] == "alive"),
        "WorkersLost": sum(1 for w in report.workers if w["status"] == "lost"),
        "Findings": sum(1 for f in report.findings if f.alertable),
        "AlertsPublished": report.stats.get("alerts_published", 0),
        "AlertsFailed": sum(1 for a in report.alerts if not (a.published or a.printed)),
        "AlertsUndeliverable": report.stats.get("alerts_undeliverable", 0),
        "SourceErrors": sum(1 for status in report.sources.values() if status.failed),
        "StateWrites": report.stats.get("state_writes", 0),
        "RunDuration": report.duration_ms,
    }


def target_points(report: Report, target: str, tasks: Collection[str] = ()) -> list[MetricPoint]:
    """The per-target metrics of a check or a watch (an audit changes nothing: none);
    ``tasks``: the task names that get a ``TaskDeaths`` metric of their own."""
    if report.mode is Mode.AUDIT:
        return []
    events = report.events or RunEvents()
    at = {"target": target}
    points: list[MetricPoint] = []
    for cause, n in sorted(events.deaths().items()):
        points.append(MetricPoint("WorkerDeaths", n, at | {"cause": cause.value}))
    for cause, n in sorted(events.child_kills().items()):
        points.append(MetricPoint("ChildKills", n, at | {"cause": cause.value}))
    victims = events.victims
    lost = victims.get(Verdict.LOST, 0)
    redelivered = victims.get(Verdict.AWAITING_REDELIVERY, 0) + victims.get(Verdict.REDELIVERED, 0)
    looping = victims.get(Verdict.KILL_LOOP, 0)
    for name, n in (
        ("TasksLost", lost),
        ("TasksRedelivered", redelivered),
        ("TasksInKillLoop", looping),
        ("TasksDeadLettered", victims.get(Verdict.DEAD_LETTERED, 0)),
        ("MemoryPressureEpisodes", events.pressure_episodes()),
    ):
        if n:
            points.append(MetricPoint(name, n, at))
    open_kinds = Counter(i.kind for i in report.incidents if i.is_open)
    points.append(MetricPoint("OpenIncidents", sum(open_kinds.values()), at))
    for kind, n in sorted(open_kinds.items()):
        points.append(MetricPoint("OpenIncidentsByKind", n, at | {"kind": kind.value}))
    if report.queues is not None:
        idle = [q for q in report.queues if q["messages"] and not q["consumers"]]
        points.append(MetricPoint("QueuesWithoutConsumers", len(idle), at))
        points.append(MetricPoint("MessagesWithoutConsumers", sum(q["messages"] for q in idle), at))
    for source, status in sorted(report.sources.items()):
        if status.failed:
            points.append(MetricPoint("SourceFailing", 1, at | {"source": source}))
    for name, n in sorted(events.deaths_by_task.items()):
        if name in tasks:
            points.append(MetricPoint("TaskDeaths", n, at | {"task": name}))
    return points


def blobs(report: Report, target: str, tasks: Collection[str] = ()) -> list[MetricBlob]:
    """The per-target points grouped by their dimension values (one EMF document each), with the
    task names, orphaned queues and incident kinds of the run as metadata on the first."""
    groups: dict[tuple[tuple[str, str], ...], list[MetricPoint]] = defaultdict(list)
    for point in target_points(report, target, tasks):
        groups[tuple(sorted(point.dimensions.items()))].append(point)
    out = [MetricBlob(dict(dims), tuple(points)) for dims, points in groups.items()]
    metadata = _metadata(report)
    if out and metadata:
        out[0] = MetricBlob(out[0].dimensions, out[0].points, metadata)
    return out


def _metadata(report: Report) -> dict[str, object]:
    meta: dict[str, object] = {}
    if report.events is not None and report.events.task_names:
        meta["tasks"] = list(report.events.task_names)
    idle = _names(q["name"] for q in report.queues or () if q["messages"] and not q["consumers"])
    if idle:
        meta["queues_without_consumers"] = idle
    opened = sorted({kind.value for kind, _ in (report.events.opened if report.events else {})})
    if opened:
        meta["opened"] = opened
    return meta


def _names(names: Iterable[str]) -> list[str]:
    return sorted(set(names))


def open_incidents_text(report: Report, limit: int = 20) -> str:
    """The open incidents in one line, for a Logs Insights table: ``worker_lost celery@a
    (inc-..., since 2026-11-24 13:50:31 UTC); ...``, or ``none``."""
    open_ = [i for i in report.incidents if i.is_open]
    shown = [
        f"{i.kind.value} {i.finding.worker or i.key.subject} ({i.id}, since {utc(i.opened_at)})"
        for i in sorted(open_, key=lambda i: i.opened_at)[:limit]
    ]
    if len(open_) > limit:
        shown.append(f"and {len(open_) - limit} more")
    return "; ".join(shown) or "none"


def metric_lines(report: Report, target: str) -> list[str]:
    """The per-target metrics of a run as a person reads them (the demo prints these):
    ``WorkerDeaths{target=default, cause=oom_killed} 1 Count``, then the metadata."""
    lines = []
    for blob in blobs(report, target):
        dims = ", ".join(f"{k}={v}" for k, v in blob.dimensions.items())
        lines += [f"{p.name}{{{dims}}} {p.value:g} {p.unit}" for p in blob.points]
        lines += [f"  metadata {key}: {value}" for key, value in blob.metadata.items()]
    return lines
