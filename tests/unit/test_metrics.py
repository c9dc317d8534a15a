"""The per-target metrics of a run (issue 21): counted from what the run saved, grouped by
dimension values into EMF documents, catalog names and dimensions only, task names as metadata."""

from __future__ import annotations

from oomcheck.model import (
    Cause,
    Incident,
    IncidentKey,
    Kind,
    Mode,
    Severity,
    SourceState,
    SourceStatus,
    Verdict,
)
from oomcheck.model.findings import Finding
from oomcheck.report.document import Report
from oomcheck.report.events import RunEvents
from oomcheck.report.metrics import ALWAYS, CATALOG, blobs, open_incidents_text, run_level

T0 = 1_790_000_000.0


def _report(mode: Mode = Mode.CHECK, **changes) -> Report:
    finding = Finding(Kind.WORKER_LOST, Severity.CRITICAL, "celery@a", cause=Cause.OOM_KILLED)
    incident = Incident(
        "inc-1", IncidentKey(Kind.WORKER_LOST, "celery@a:1"), Kind.WORKER_LOST, T0, finding
    )
    fields = {
        "mode": mode,
        "checked_at": T0,
        "duration_ms": 12,
        "workers": ({"status": "alive"}, {"status": "lost"}),
        "findings": (finding,),
        "sources": {
            "inspect": SourceStatus(SourceState.OK),
            "exits": SourceStatus(SourceState.ERROR, "throttled"),
        },
        "stats": {"state_writes": 3},
        "incidents": (incident,),
        "queues": (
            {"name": "reports", "messages": 7, "consumers": []},
            {"name": "celery", "messages": 2, "consumers": ["celery@b"]},
        ),
        "events": RunEvents(
            opened={
                (Kind.WORKER_LOST, Cause.OOM_KILLED): 1,
                (Kind.MEMORY_PRESSURE, Cause.UNKNOWN): 1,
            },
            victims={Verdict.LOST: 2, Verdict.AWAITING_REDELIVERY: 1},
            task_names=("reports.build",),
        ),
    }
    fields.update(changes)
    return Report(**fields)


def _points(report: Report) -> dict[tuple[str, tuple], float]:
    return {
        (p.name, tuple(sorted(b.dimensions.items()))): p.value
        for b in blobs(report, "shop")
        for p in b.points
    }


def test_a_run_that_saved_a_death_counts_it_by_cause_with_its_victims():
    points = _points(_report())
    target = (("target", "shop"),)
    assert points == {
        ("WorkerDeaths", (("cause", "oom_killed"), ("target", "shop"))): 1,
        ("TasksLost", target): 2,
        ("TasksRedelivered", target): 1,
        ("MemoryPressureEpisodes", target): 1,
        ("OpenIncidents", target): 1,
        ("OpenIncidentsByKind", (("kind", "worker_lost"), ("target", "shop"))): 1,
        ("QueuesWithoutConsumers", target): 1,
        ("MessagesWithoutConsumers", target): 7,
        ("SourceFailing", (("source", "exits"), ("target", "shop"))): 1,
    }


def test_every_document_has_the_catalogs_dimensions_and_names_tasks_only_in_metadata():
    documents = blobs(_report(), "shop")
    for document in documents:
        for point in document.points:
            assert tuple(sorted(document.dimensions)) == tuple(
                sorted(CATALOG[point.name].dimensions)
            )
    meta = [d.metadata for d in documents if d.metadata]
    assert meta == [
        {
            "tasks": ["reports.build"],
            "queues_without_consumers": ["reports"],
            "opened": ["memory_pressure", "worker_lost"],
        }
    ]


def test_quiet_runs_emit_only_the_gauges_and_an_audit_nothing_per_target():
    quiet = _report(events=None, incidents=(), queues=None, sources={})
    assert {name for name, _ in _points(quiet)} == {"OpenIncidents"}
    assert set(ALWAYS) == {*run_level(quiet), "OpenIncidents"}
    assert blobs(_report(Mode.AUDIT), "shop") == []


def test_open_incidents_line_for_the_dashboard():
    assert open_incidents_text(_report()) == (
        "worker_lost celery@a (inc-1, since 2026-09-21 14:13:20 UTC)"
    )
    assert open_incidents_text(_report(incidents=())) == "none"


def test_a_task_name_is_a_dimension_only_when_the_setting_lists_it():
    events = RunEvents(
        opened={(Kind.WORKER_LOST, Cause.OOM_KILLED): 1},
        task_names=("media.resize", "reports.build"),
        deaths_by_task={"reports.build": 1, "media.resize": 1},
    )
    report = _report(events=events)
    assert not [p for b in blobs(report, "shop") for p in b.points if p.name == "TaskDeaths"]
    listed = [
        (p.value, dict(b.dimensions))
        for b in blobs(report, "shop", frozenset({"reports.build"}))
        for p in b.points
        if p.name == "TaskDeaths"
    ]
    assert listed == [(1, {"target": "shop", "task": "reports.build"})]


def test_dead_lettered_victims_have_their_own_count():
    events = RunEvents(victims={Verdict.DEAD_LETTERED: 2, Verdict.LOST: 1})
    points = _points(_report(events=events))
    assert points[("TasksDeadLettered", (("target", "shop"),))] == 2
    assert points[("TasksLost", (("target", "shop"),))] == 1
