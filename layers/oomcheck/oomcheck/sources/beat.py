"""The periodic schedule as RedBeat (``redbeat.RedBeatScheduler``) keeps it in Redis.

Read from celery-redbeat's own code (``redbeat/schedulers.py`` and ``redbeat/decoder.py``, 2.x):

- ``<prefix>:schedule`` (a sorted set; with the default prefix ``redbeat:`` the key is
  ``redbeat::schedule``): each member is an entry's key, ``<prefix><entry name>``, scored with the
  POSIX time it is next due (-1: no next run);
- each entry's key is a hash: ``definition`` (JSON: ``name``, ``task``, ``args``, ``kwargs``,
  ``options``, ``schedule``, ``enabled``) and ``meta`` (JSON: ``last_run_at``,
  ``total_run_count``). Schedules and datetimes are tagged objects: ``{"__type__": "interval",
  "every": <seconds>, "relative": ...}``, ``{"__type__": "crontab", "minute": ..., "hour": ...,
  "day_of_week": ..., "day_of_month": ..., "month_of_year": ...}``, ``{"__type__": "datetime",
  "year": ..., "microsecond": ..., "timezone": <zone name, or an offset in seconds>}``;
- ``<prefix>:lock`` (``redbeat_lock_key``): a redis-py lock the running beat holds and extends on
  every tick; it expires ``redbeat_lock_timeout`` (default 5 x beat's max interval) after the
  last tick, so a SIGKILLed beat leaves it until then.

Two pipelined round trips per run, both read only: the sorted set (capped), its size and the
lock's PTTL; then HMGET of each entry's two fields. Nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from oomcheck.model import BeatEntry, BeatSchedule

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "MAX_ENTRIES",
    "REDBEAT",
    "RedBeatSource",
    "entry_from_hash",
    "is_redbeat",
]

DEFAULT_KEY_PREFIX = "redbeat:"
REDBEAT = "redbeat.RedBeatScheduler"
MAX_ENTRIES = 5000
# Celery's default scheduler and django-celery-beat's, named in the source's "off" reason.
_OTHER_SCHEDULERS: Mapping[str, str] = {
    "celery.beat:PersistentScheduler": "the default scheduler keeps its schedule in a shelve file "
    "on beat's own disk, which the checker cannot read",
    "django_celery_beat.schedulers:DatabaseScheduler": "django-celery-beat keeps its schedule in "
    "the Django database, which the checker does not read",
}
_OTHER_SCHEDULERS = {
    **_OTHER_SCHEDULERS,
    **{k.replace(":", "."): v for k, v in _OTHER_SCHEDULERS.items()},
}


def is_redbeat(scheduler: str | None) -> bool:
    """``redbeat.RedBeatScheduler`` in either of Celery's spellings (dots or a colon)."""
    return scheduler is not None and scheduler.replace(":", ".").strip() in {
        REDBEAT,
        "redbeat.schedulers.RedBeatScheduler",
    }


def off_reason(scheduler: str | None) -> str:
    """Why the beat source is off for ``scheduler``, and what to do about it."""
    if not scheduler:
        return (
            "no beat scheduler configured (OOMCHECK_BEAT_SCHEDULER, or beat_scheduler in the app "
            "given with -A)"
        )
    name = scheduler.strip()
    why = _OTHER_SCHEDULERS.get(name) or f"{name} is not a scheduler oomcheck can read"
    return f"{why}; run beat with redbeat.RedBeatScheduler for oomcheck to watch it"


class RedBeatSource:
    """Reads a RedBeat schedule with a redis-py client (decoded or not)."""

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        lock_key: str | None = None,
        where: str = "redis",
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._client = client
        self.key_prefix = key_prefix
        self.schedule_key = key_prefix + ":schedule"
        # RedBeat 2.4 puts its prefix in front of a lock key that lacks it
        lock = lock_key or key_prefix + ":lock"
        self.lock_key = lock if lock.startswith(key_prefix) else key_prefix + lock
        self.max_entries = max_entries
        self._where = where

    def describe(self) -> str:
        return f"RedBeat on {self._where}, key prefix {self.key_prefix!r}"

    def read(self, now: float) -> BeatSchedule:
        pipe = self._client.pipeline(transaction=False)
        pipe.zrange(self.schedule_key, 0, self.max_entries - 1, withscores=True)
        pipe.zcard(self.schedule_key)
        pipe.pttl(self.lock_key)
        members, total, pttl = pipe.execute()
        keys = [(_text(key), float(score)) for key, score in members]
        rows: Sequence[Sequence[Any]] = []
        if keys:
            pipe = self._client.pipeline(transaction=False)
            for key, _ in keys:
                pipe.hmget(key, "definition", "meta")
            rows = pipe.execute()
        entries: list[BeatEntry] = []
        unreadable = 0
        for (key, score), (definition, meta) in zip(keys, rows, strict=True):
            entry = entry_from_hash(key[len(self.key_prefix) :], definition, meta, score)
            if entry is None:
                unreadable += 1
            else:
                entries.append(entry)
        pttl = int(pttl)
        return BeatSchedule(
            scheduler=REDBEAT,
            store=self.describe(),
            entries=tuple(sorted(entries, key=lambda e: e.name)),
            # PTTL: -2 no such key, -1 a key with no expiry (a lock held for good)
            lock_held=pttl != -2,
            lock_ttl_s=pttl / 1000 if pttl >= 0 else None,
            dropped=max(0, int(total) - len(keys)),
            round_trips=2 if keys else 1,
            unreadable=unreadable,
        )


def entry_from_hash(name: str, definition: Any, meta: Any, score: float | None) -> BeatEntry | None:
    """One entry from its hash fields as RedBeat wrote them; None when ``definition`` is
    missing or is not RedBeat's JSON (the entry was deleted between the two reads)."""
    try:
        spec = json.loads(_text(definition)) if definition else None
        state = json.loads(_text(meta)) if meta else {}
    except ValueError:
        return None
    if not isinstance(spec, dict):
        return None
    state = state if isinstance(state, dict) else {}
    last_run = _datetime(state.get("last_run_at"))
    words, next_after = _schedule(spec.get("schedule"))
    next_due: datetime | None
    if last_run is None:
        # never ran: RedBeat saved it due at once; the score is all there is
        next_due = _from_score(score)
    else:
        next_due = next_after(last_run) if next_after else None
    following = next_after(next_due) if next_after and next_due else None
    count = state.get("total_run_count")
    task = spec.get("task")
    return BeatEntry(
        name=str(spec.get("name") or name),
        task=task if isinstance(task, str) else None,
        enabled=spec.get("enabled", True) is not False,
        schedule=words,
        last_run_at=last_run.timestamp() if last_run else None,
        next_due_at=next_due.timestamp() if next_due else None,
        period_s=(following - next_due).total_seconds() if following and next_due else None,
        total_run_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        score=score if score is not None and score >= 0 else None,
    )


NextRun = Callable[[datetime], datetime | None]


def _schedule(raw: Any) -> tuple[str, NextRun | None]:
    """The schedule in words and the function from a run to the next one (None: unknown)."""
    if not isinstance(raw, dict):
        return "unknown schedule", None
    kind = raw.get("__type__")
    if kind == "interval":
        every = raw.get("every")
        if isinstance(every, int | float) and not isinstance(every, bool) and every > 0:
            step = timedelta(seconds=float(every))
            return f"every {_seconds_words(float(every))}", lambda last: last + step
        return "interval of unknown length", None
    if kind == "crontab":
        fields = [
            str(raw.get(k, "*"))
            for k in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        ]
        return f"crontab {' '.join(fields)}", _crontab_next(raw)
    return f"{kind or 'unknown'} schedule (not judged)", None


def _crontab_next(raw: Mapping[str, Any]) -> NextRun | None:
    """Celery's own crontab arithmetic: the first fire time after a run, in that run's time zone
    (beat writes last_run_at in its app's zone, the one its crontabs are read in)."""
    from celery.schedules import crontab

    try:
        cron = crontab(
            minute=raw.get("minute", "*"),
            hour=raw.get("hour", "*"),
            day_of_week=raw.get("day_of_week", "*"),
            day_of_month=raw.get("day_of_month", "*"),
            month_of_year=raw.get("month_of_year", "*"),
        )
    except (ValueError, TypeError):
        return None

    def next_run(last: datetime) -> datetime | None:
        # remaining_delta gives the next fire time relative to ``last`` (its clock not involved)
        start, delta, _ = cron.remaining_delta(last, tz=last.tzinfo)
        return (start + delta) if delta is not None else None

    return next_run


def _seconds_words(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


def _datetime(raw: Any) -> datetime | None:
    """RedBeat's tagged datetime, aware; None for anything else."""
    if not isinstance(raw, dict) or raw.get("__type__") != "datetime":
        return None
    try:
        parts = {k: int(raw[k]) for k in ("year", "month", "day", "hour", "minute", "second")}
        micro = int(raw.get("microsecond", 0))
        return datetime(**parts, microsecond=micro, tzinfo=_zone(raw.get("timezone", "UTC")))
    except (KeyError, TypeError, ValueError):
        return None


def _zone(raw: Any) -> tzinfo:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return timezone(timedelta(seconds=float(raw)))
    if not isinstance(raw, str) or raw.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _from_score(score: float | None) -> datetime | None:
    return datetime.fromtimestamp(score, tz=UTC) if score is not None and score >= 0 else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
