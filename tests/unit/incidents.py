"""Incidents built directly (not through detection), for the delivery and alert tests."""

from __future__ import annotations

from oomcheck.model import (
    Action,
    Cause,
    Finding,
    Incident,
    IncidentKey,
    Kind,
    PendingAlert,
    Severity,
    State,
    TaskFate,
    Verdict,
)

T0 = 1_790_000_000.0


def fates(worker: int, n: int, awaiting: int = 0) -> tuple[TaskFate, ...]:
    """``n`` tasks of one worker: the first ``awaiting`` await redelivery, the rest are lost."""
    return tuple(
        TaskFate(
            f"w{worker}-task-{j:04d}-{'x' * 24}",
            "billing.tasks.rebuild_invoice_pdf",
            "STARTED",
            T0 - 30,
            Verdict.AWAITING_REDELIVERY if j < awaiting else Verdict.LOST,
            redeliver_at=T0 + 3600 if j < awaiting else None,
            worker_pid=4000 + j,
        )
        for j in range(n)
    )


def incident(
    i: int,
    *,
    tasks: int = 0,
    awaiting: int = 0,
    cause: Cause = Cause.OOM_KILLED,
    exit_code: int | None = 137,
    kind: Kind = Kind.WORKER_LOST,
    opened_at: float = T0,
    pending: tuple[PendingAlert, ...] | None = None,
) -> Incident:
    worker = f"celery@worker-{i}"
    finding = Finding(
        kind=kind,
        severity=Severity.CRITICAL,
        worker=worker,
        cause=cause,
        exit_code=exit_code,
        evidence=(f"ecs: exitCode {exit_code} OutOfMemoryError on task {i}",),
        tasks=fates(i, tasks, awaiting),
        first_seen=opened_at,
        incident_id=f"inc-{i:04d}",
        summary=f"{worker} died with {tasks} task(s)",
        advice=("Raise the worker's memory limit.",),
        key=IncidentKey(kind, worker),
    )
    return Incident(
        id=f"inc-{i:04d}",
        key=IncidentKey(kind, worker),
        kind=kind,
        opened_at=opened_at,
        finding=finding,
        pending=(PendingAlert(Action.OPEN, opened_at),) if pending is None else pending,
    )


def state_of(*incidents: Incident) -> State:
    return State(incidents={i.id: i for i in incidents}, last_run_at=T0)
