"""A worker's container near its memory limit (memory_pressure), naming the tasks it runs now:
the ones the kernel is about to kill."""

from __future__ import annotations

from collections.abc import Iterable

from oomcheck.detect import keys
from oomcheck.detect.carried import Carried
from oomcheck.detect.context import ALIVE, Context
from oomcheck.detect.signals import Carry, Outcome, Resolution, Signal
from oomcheck.detect.text import short_utc
from oomcheck.exitparse.memory import BASIS_HARD
from oomcheck.model import (
    ActiveTask,
    Finding,
    IncidentKey,
    Kind,
    MemoryPoint,
    MemorySample,
    Severity,
    TaskFate,
    Verdict,
    WorkerRecord,
)

KINDS = frozenset({Kind.MEMORY_PRESSURE})
# points kept per worker while above the threshold: enough for a trend
KEEP = 6


def gone(key: IncidentKey) -> str:
    return f"{key.subject} no longer shows memory pressure"


def judge(ctx: Context, carried: Carried) -> Outcome:
    """memory_pressure for a live worker (in ``carried.workers``, the roster after this run) over
    the threshold for ``memory_samples`` samples in a row; carries the points to remember per
    worker (only those above the threshold)."""
    if ctx.obs.memory is None:
        return Outcome(KINDS, judged=False)
    kept: dict[str, tuple[MemoryPoint, ...]] = {}
    signals: list[Signal] = []
    resolutions: list[Resolution] = []
    held: set[IncidentKey] = set()
    for name in sorted({*ctx.memory, *ctx.state.pressure}):
        key = keys.memory(name)
        record = carried.workers.get(name)
        is_open = ctx.open_incident(key) is not None
        if record is None or record.status not in ALIVE:
            if is_open:  # its death (or departure) is its own incident, which says this
                resolutions.append(Resolution(key, f"{name} is no longer running"))
            continue
        samples = ctx.memory.get(name, ())
        points = streak(ctx.state.pressure.get(name, ()), samples, ctx.policy.memory_threshold)
        if points:
            kept[name] = points
        if len(points) >= ctx.policy.memory_samples:
            signals.append(Signal(_finding(ctx, record, points, samples)))
        elif samples and is_open:
            last = samples[-1]
            share = f"{last.share:.0%}" if last.share is not None else "an unknown share"
            resolutions.append(Resolution(key, f"memory is back to {share} of its {last.basis}"))
        elif is_open:
            held.add(key)  # no sample of it this run: its memory is not known to have dropped
    return Outcome(
        KINDS,
        signals=tuple(signals),
        resolutions=tuple(resolutions),
        held=frozenset(held),
        gone=gone,
        carry=Carry(pressure=kept),
    )


def streak(
    before: Iterable[MemoryPoint], samples: Iterable[MemorySample], threshold: float
) -> tuple[MemoryPoint, ...]:
    """The latest run of samples at or above ``threshold`` of their limit, continuing the one
    remembered; a sample below breaks it, one without a known limit neither extends nor breaks."""
    points = list(before)
    for sample in samples:
        if sample.limit_mb is None or sample.share is None:
            continue
        if points and sample.at <= points[-1].at:
            continue  # read again through an overlapping window
        if sample.share >= threshold:
            points.append(
                MemoryPoint(sample.at, sample.used_mb, sample.limit_mb, basis_words(sample))
            )
        else:
            points = []
    return tuple(points[-KEEP:])


def basis_words(sample: MemorySample) -> str:
    """What a sample's share was computed against, as a death's evidence says it: the hard limit
    is "limit"; anything else names its platform ("ECS reservation"), since it is no limit."""
    if sample.basis == BASIS_HARD:
        return "limit"
    return f"{sample.source.upper()} {sample.basis}" if sample.source else sample.basis


def trend_mb_per_min(points: tuple[MemoryPoint, ...]) -> float | None:
    if len(points) < 2 or points[-1].at <= points[0].at:
        return None
    return (points[-1].used_mb - points[0].used_mb) / ((points[-1].at - points[0].at) / 60.0)


def describe(points: tuple[MemoryPoint, ...], basis: str) -> str:
    """ "1,843 of 2,048 MiB (90% of its hard limit), +120 MB/min" for an evidence line."""
    last = points[-1]
    trend = trend_mb_per_min(points)
    rising = f", {trend:+,.0f} MB/min" if trend is not None else ""
    return (
        f"{last.used_mb:,.0f} of {last.limit_mb:,.0f} MiB "
        f"({last.used_mb / last.limit_mb:.0%} of its {basis}){rising}"
    )


def _finding(
    ctx: Context,
    record: WorkerRecord,
    points: tuple[MemoryPoint, ...],
    samples: tuple[MemorySample, ...],
) -> Finding:
    basis = samples[-1].basis if samples else "limit"
    source = samples[-1].source if samples else "memory"
    snap = ctx.live.get(record.name)
    running = snap.active if snap is not None and snap.active is not None else record.active
    tasks = tuple(_running(ctx, t) for t in running)
    doing = (
        "; running: " + ", ".join(f"{t.name or 'task'} {t.id} ({_ran(ctx, t)})" for t in tasks[:5])
        if tasks
        else "; no task running"
    )
    basis_note = (
        ()
        if basis == "hard limit"
        else (
            f"The share is of the container's {basis}: no hard limit is known for it; the "
            "kernel kills at the host's or task's limit instead.",
        )
    )
    return Finding(
        kind=Kind.MEMORY_PRESSURE,
        severity=Severity.WARNING,
        worker=record.name,
        evidence=tuple(
            f"{source}: {p.used_mb:,.0f} of {p.limit_mb:,.0f} MiB at {short_utc(p.at)}"
            for p in points[-3:]
        ),
        tasks=tasks,
        summary=f"{record.name} is near its memory limit: {describe(points, basis)}{doing}",
        advice=(
            "The tasks running now are the ones the kernel is about to kill: look at their "
            "arguments and memory use, or give the worker more memory or less concurrency.",
            "worker_max_memory_per_child replaces a bloated pool child between tasks.",
            *basis_note,
        ),
        key=keys.memory(record.name),
    )


def _running(ctx: Context, task: ActiveTask) -> TaskFate:
    return TaskFate(
        id=task.id,
        name=task.name,
        state="STARTED",
        started_at=task.time_start,
        verdict=Verdict.RUNNING,
        worker_pid=task.worker_pid,
    )


def _ran(ctx: Context, task: TaskFate) -> str:
    return f"for {ctx.now - task.started_at:.0f} s" if task.started_at is not None else "running"
