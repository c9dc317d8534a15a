"""Celery beat that stopped sending (beat_stopped): periodic entries overdue past the grace.

"Overdue" is judged from each entry's last run and its schedule (``BeatEntry.next_due_at``), not
from RedBeat's sorted-set score. A running beat sends an entry within a tick of its due time, so an
entry late by more than ``beat_grace_s`` means no beat is sending: none holds the lock (beat is
down), or the one that holds it sends nothing (killed, its lock not yet expired, or hung). A beat
restarted within the grace, a disabled or deleted entry, and an entry not yet due raise nothing.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from oomcheck.detect import keys, text
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Carry, Outcome, Resolution, Signal
from oomcheck.model import (
    BeatEntry,
    BeatSchedule,
    Cause,
    ExitEvidence,
    Finding,
    Incident,
    Kind,
    Severity,
    TaskFate,
)

KINDS = frozenset({Kind.BEAT_STOPPED})
MAX_NAMED = 10
_DEATH = "beat's exit: "


def judge(ctx: Context, carried: Carried) -> Outcome:
    """beat_stopped while enabled entries are overdue by more than the grace; resolved, naming
    the entries that ran again, once none is."""
    del carried  # beat's state is the schedule itself: nothing carried between runs
    schedule = ctx.obs.beat
    if schedule is None:
        return Outcome(KINDS, judged=False)
    key = keys.beat(schedule.store)
    late = overdue(schedule, ctx.now, ctx.policy.beat_grace_s)
    if not late:
        incident = ctx.open_incident(key)
        if incident is None:
            return Outcome(KINDS)
        return Outcome(KINDS, resolutions=(Resolution(key, _why_over(schedule, incident)),))
    since = min(e.next_due_at or ctx.now for e in late)
    deaths = _beat_deaths(ctx, since)
    finding = _finding(ctx, schedule, late, since, deaths)
    return Outcome(
        KINDS,
        signals=(Signal(finding),),
        carry=Carry(events=frozenset(e.event_id for e in deaths)),
    )


def overdue(schedule: BeatSchedule, now: float, grace_s: float) -> tuple[BeatEntry, ...]:
    """The enabled entries whose next run is more than ``grace_s`` in the past, latest due last."""
    late = [
        e
        for e in schedule.entries
        if e.enabled and e.next_due_at is not None and now - e.next_due_at > grace_s
    ]
    return tuple(sorted(late, key=lambda e: (e.next_due_at or 0.0, e.name)))


def missed_runs(entry: BeatEntry, now: float) -> int:
    """Runs that should have been sent by ``now`` and were not (at least the one due)."""
    if entry.next_due_at is None:
        return 0
    if not entry.period_s:
        return 1
    return 1 + int((now - entry.next_due_at) // entry.period_s)


def _beat_deaths(ctx: Context, since: float) -> tuple[ExitEvidence, ...]:
    """Fresh exit evidence of beat's own container (``beat_containers``), from its last due run
    on: a death that explains why it stopped. Unmatched evidence only: a worker's is its own."""
    patterns = ctx.policy.beat_containers
    if not patterns:
        return ()
    margin = ctx.policy.beat_grace_s
    return tuple(
        e
        for e in ctx.unmatched
        if not e.clean
        and e.at >= since - margin
        and any(fnmatchcase(name, p) for name in (e.process or "", *e.hosts) for p in patterns)
    )


def _finding(
    ctx: Context,
    schedule: BeatSchedule,
    late: tuple[BeatEntry, ...],
    since: float,
    deaths: tuple[ExitEvidence, ...],
) -> Finding:
    before = ctx.open_incident(keys.beat(schedule.store))
    cause, exit_code, death = _cause(deaths, before)
    named = ", ".join(e.name for e in late[:MAX_NAMED]) + (
        f" and {len(late) - MAX_NAMED} more" if len(late) > MAX_NAMED else ""
    )
    evidence = [text.beat_entry_line(e, missed_runs(e, ctx.now), ctx.now) for e in late[:MAX_NAMED]]
    evidence.append(text.beat_lock_words(schedule.lock_held, schedule.lock_ttl_s))
    if death:
        evidence.append(death)
    return Finding(
        kind=Kind.BEAT_STOPPED,
        severity=Severity.CRITICAL,
        worker=None,
        cause=cause,
        exit_code=exit_code,
        evidence=tuple(evidence),
        summary=(
            f"celery beat has sent nothing since {text.short_utc(since)}: {len(late)} periodic "
            f"entr{'y is' if len(late) == 1 else 'ies are'} overdue ({named}); "
            + ("a beat holds the lock but sends nothing" if schedule.lock_held else "no beat runs")
        ),
        advice=text.beat_advice(schedule.lock_held, schedule.lock_ttl_s, cause, ctx.policy),
        key=keys.beat(schedule.store),
    )


def _cause(
    deaths: tuple[ExitEvidence, ...], before: Incident | None
) -> tuple[Cause, int | None, str | None]:
    """What killed beat: this run's evidence, else what the open incident already knew (the
    evidence is fresh once only)."""
    for e in sorted(deaths, key=lambda d: (d.cause is not Cause.OOM_KILLED, d.at)):
        return e.cause, e.exit_code, f"{_DEATH}{e.source}: {e.text}"
    if before is not None and before.finding.cause is not Cause.UNKNOWN:
        known = [line for line in before.finding.evidence if line.startswith(_DEATH)]
        return before.finding.cause, before.finding.exit_code, known[-1] if known else None
    return Cause.UNKNOWN, None, None


def _why_over(schedule: BeatSchedule, incident: Incident) -> str:
    ran = [e for e in schedule.entries if (e.last_run_at or 0.0) >= incident.opened_at]
    if ran:
        latest = max(ran, key=lambda e: e.last_run_at or 0.0)
        return (
            f"beat sends again: {', '.join(e.name for e in ran[:MAX_NAMED])} ran "
            f"(last at {text.short_utc(latest.last_run_at)}); no entry is overdue"
        )
    return "no entry is overdue any more (the late ones were deleted, disabled or rescheduled)"


# ---------------------------------------------------------------------------------------------
# Periodic victims: the beat entries behind tasks that died with a worker


def entries_of(ctx: Context, task_name: str | None) -> tuple[BeatEntry, ...]:
    """The enabled beat entries that send ``task_name`` (matched by task name: the checker
    sees no message headers, so ``periodic_task_name`` is not read)."""
    return ctx.obs.beat.entry_for_task(task_name) if ctx.obs.beat is not None else ()


def with_periodic(
    ctx: Context, evidence: tuple[str, ...], fates: tuple[TaskFate, ...]
) -> tuple[str, ...]:
    """A death's evidence with, for each dead task that a beat entry sends, the entry and its
    next run (this run's lines replace an earlier run's: the next run moves on)."""
    kept = tuple(line for line in evidence if not line.startswith(text.PERIODIC))
    return tuple(dict.fromkeys((*kept, *periodic_lines(ctx, fates))))


def periodic_lines(ctx: Context, fates: tuple[TaskFate, ...]) -> tuple[str, ...]:
    """Which beat entry each dead task came from, and when it runs next."""
    lines: dict[str, None] = {}
    for fate in fates:
        for entry in entries_of(ctx, fate.name)[:3]:
            lines[text.periodic_line(fate.name or "?", entry, ctx.now)] = None
    return tuple(lines)
