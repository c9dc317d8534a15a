"""The audit's and the digest's view of the history by task type: the top task types by kills,
with their peak memory and what to do, and the workers whose memory is rising (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from oomcheck.detect.rules.memory import trend_mb_per_min
from oomcheck.detect.text import task_type_advice
from oomcheck.model import Cause, MemoryPoint, TaskHistory

TOP = 10


@dataclass(frozen=True, slots=True)
class Tally:
    """One task type over a window."""

    name: str
    deaths: int
    victims: int
    lost: int
    redelivered: int
    by_cause: Mapping[str, int]
    peak_share: float | None
    onsets: int
    last_at: float

    def rank(self) -> tuple[int, int, int, float, str]:
        # most deaths first; then the most of its tasks killed, then lost; then the latest
        return (-self.deaths, -self.victims, -self.lost, -self.last_at, self.name)


def tally(history: TaskHistory, since: float, until: float) -> Tally | None:
    deaths = [d for d in history.deaths if since <= d.at < until]
    onsets = [p for p in history.pressure if since <= p.at < until]
    if not deaths and not onsets:
        return None
    peaks = [d.peak_share for d in deaths if d.peak_share is not None]
    return Tally(
        name=history.name,
        deaths=len(deaths),
        victims=sum(d.victims for d in deaths),
        lost=sum(d.lost for d in deaths),
        redelivered=sum(d.redelivered for d in deaths),
        by_cause=dict(sorted(Counter(d.cause.value for d in deaths).items())),
        peak_share=max(peaks) if peaks else None,
        onsets=len(onsets),
        last_at=max((*(d.at for d in deaths), *(p.at for p in onsets))),
    )


def top_task_types(
    history: Mapping[str, TaskHistory], since: float, until: float, limit: int = TOP
) -> list[Tally]:
    tallies = [t for h in history.values() if (t := tally(h, since, until)) is not None]
    return sorted(tallies, key=Tally.rank)[:limit]


def task_row(t: Tally) -> dict[str, Any]:
    return {
        "task": t.name,
        "deaths": t.deaths,
        "by_cause": dict(t.by_cause),
        "tasks_killed": t.victims,
        "lost": t.lost,
        "redelivered": t.redelivered,
        "peak_share": t.peak_share,
        "pressure_onsets": t.onsets,
        "last_at": t.last_at,
        "advice": task_type_advice(
            t.name,
            deaths=t.deaths,
            oom=t.by_cause.get(Cause.OOM_KILLED.value, 0),
            peak_share=t.peak_share,
            lost=t.lost,
            onsets=t.onsets,
        ),
    }


def rising_rows(
    pressure: Mapping[str, tuple[MemoryPoint, ...]], running: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Workers whose remembered samples (kept while above the threshold) show memory growing,
    fastest first; only those still running when ``running`` is given (a dead worker's samples
    stay until the memory source reads again)."""
    rows = []
    for worker, points in pressure.items():
        if running is not None and worker not in running:
            continue
        trend = trend_mb_per_min(points)
        if trend is None or trend <= 0 or not points:
            continue
        last = points[-1]
        rows.append(
            {
                "worker": worker,
                "used_mb": round(last.used_mb, 1),
                "limit_mb": round(last.limit_mb, 1),
                "share": round(last.used_mb / last.limit_mb, 4) if last.limit_mb else None,
                "trend_mb_per_min": round(trend, 1),
            }
        )
    return sorted(rows, key=lambda r: (-r["trend_mb_per_min"], r["worker"]))


def history_block(
    history: Mapping[str, TaskHistory],
    pressure: Mapping[str, tuple[MemoryPoint, ...]],
    since_s: float,
    now: float,
    running: Collection[str] | None = None,
) -> dict[str, Any]:
    """The report's ``"history"``: the window, the top task types by kills, rising workers."""
    return {
        "since_s": since_s,
        "tasks": [task_row(t) for t in top_task_types(history, now - since_s, now + 1)],
        "rising_memory": rising_rows(pressure, running),
    }
