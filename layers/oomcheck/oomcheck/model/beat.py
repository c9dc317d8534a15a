"""What the beat source saw of the periodic schedule (RedBeat's store in Redis)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BeatEntry:
    """One periodic entry as the scheduler stores it.

    ``next_due_at`` is computed from the entry's last run and its schedule, not from the sorted
    set's score (RedBeat re-saves every entry when beat starts, and the score can then lie in the
    past for an entry that is not due); for an entry that never ran it is the score. None: the
    schedule has no next run, or its kind cannot be read (then the entry is listed, never judged).
    ``period_s``: the time from ``next_due_at`` to the run after it (missed runs are counted in it).
    """

    name: str
    task: str | None
    enabled: bool
    schedule: str  # in words: "every 60 s", "crontab 0 * * * *"
    last_run_at: float | None
    next_due_at: float | None
    period_s: float | None = None
    total_run_count: int | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class BeatSchedule:
    """One read of the schedule. ``lock_ttl_s``: what is left of the beat lock, None when no beat
    holds it (or it never expires); ``dropped``: entries beyond the read's cap, not read."""

    scheduler: str
    store: str  # where the schedule lives, without secrets: "redbeat redis db 0, prefix redbeat:"
    entries: tuple[BeatEntry, ...]
    lock_held: bool
    lock_ttl_s: float | None = None
    dropped: int = 0
    round_trips: int = 0
    # entry keys in the sorted set whose hash is gone or unreadable (RedBeat drops them itself)
    unreadable: int = 0

    def entry_for_task(self, task: str | None) -> tuple[BeatEntry, ...]:
        """The enabled entries that send ``task``."""
        if task is None:
            return ()
        return tuple(e for e in self.entries if e.enabled and e.task == task)
