"""Audit advice: Celery settings that make silent deaths worse or invisible. Pure."""

from __future__ import annotations

from oomcheck.model import Finding, IncidentKey, Kind, Observation, Severity, State, TaskLimits


def _risk(key: str, worker: str | None, summary: str, advice: str) -> Finding:
    return Finding(
        kind=Kind.CONFIG_RISK,
        severity=Severity.INFO,
        worker=worker,
        summary=summary,
        advice=(advice,),
        key=IncidentKey(Kind.CONFIG_RISK, key),
    )


def config_risks(obs: Observation, state: State) -> list[Finding]:
    findings: list[Finding] = []
    workers = obs.workers or {}
    limits: dict[str, TaskLimits] = {}
    for record in state.workers.values():
        limits.update(record.limits)
    for snap in workers.values():
        limits.update(snap.registered)

    loops = sorted(
        name
        for name, lim in limits.items()
        if lim.acks_late and lim.reject_on_worker_lost and not lim.time_limit
    )
    if loops:
        findings.append(
            _risk(
                "reject_without_limit",
                None,
                f"{len(loops)} task(s) use acks_late + reject_on_worker_lost without a time_limit: "
                + ", ".join(loops[:10]),
                "A task that kills its process is requeued at once and kills the next one, "
                "forever. "
                "Give such tasks a time_limit, and a retry cap (task_retry_on_worker_lost with "
                "max_retries, Celery 5.7+) instead of reject_on_worker_lost.",
            )
        )

    running = sum(len(s.active or ()) for s in workers.values())
    if obs.started is not None and running > 0 and not obs.started:
        findings.append(
            _risk(
                "track_started_off",
                None,
                f"workers run {running} task(s) but the result backend holds no STARTED record",
                "Set task_track_started=True: without it a task that dies with its worker leaves "
                "no trace in the result backend, and oomcheck can only name tasks it saw in "
                "active() before the death.",
            )
        )

    for name, snap in sorted(workers.items()):
        if snap.pool in ("solo", "threads"):
            findings.append(
                _risk(
                    f"quiet_pool:{name}",
                    name,
                    f"{name} runs the {snap.pool} pool: it cannot answer remote control while a "
                    "task runs, and time limits are not enforced",
                    "Prefer the prefork pool, or give every task an explicit time_limit / "
                    "OOMCHECK_TASK_LIMITS entry so a hung or dead worker is told apart from a "
                    "busy one.",
                )
            )
    if obs.broker_transport == "redis" and any(lim.acks_late for lim in limits.values()):
        findings.append(
            _risk(
                "visibility_timeout",
                None,
                "acks_late tasks on a Redis broker come back only after visibility_timeout "
                "when their worker dies",
                "Keep visibility_timeout longer than your longest task but as short as you can; "
                "oomcheck reports each such task as awaiting_redelivery with its time.",
            )
        )
    return findings
