"""The beat source's read: the periodic schedule, once per run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oomcheck.model import BeatSchedule, Source
from oomcheck.observe.base import Read, guard, off

if TYPE_CHECKING:
    from oomcheck.ports import Deps


def read_beat(deps: Deps, now: float) -> Read[BeatSchedule]:
    source = deps.beat
    if source is None:
        return Read(None, off(deps, Source.BEAT))
    schedule, status = guard(lambda: source.read(now), deps.settings.secrets())
    if schedule is None:
        return Read(None, status)
    counters = {
        "beat_entries": len(schedule.entries),
        "beat_entries_dropped": schedule.dropped,
        "beat_round_trips": schedule.round_trips,
    }
    return Read(schedule, status, counters)
