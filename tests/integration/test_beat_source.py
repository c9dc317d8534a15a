"""The beat source against entries written by celery-redbeat itself (its RedBeatSchedulerEntry) in
a real Redis: schedules, last runs, the lock, and the score that lies after a re-save."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from celery import Celery
from celery.schedules import crontab, schedule

from oomcheck.sources.beat import RedBeatSource


@pytest.fixture
def app(broker_db_url: str) -> Iterator[Celery]:
    app = Celery("beat-source", broker=broker_db_url, set_as_current=False)
    app.conf.redbeat_key_prefix = f"rbs-{uuid.uuid4().hex[:8]}:"
    app.conf.redbeat_redis_url = broker_db_url
    app.conf.timezone = "UTC"
    yield app
    if getattr(app, "redbeat_redis", None) is not None:
        app.redbeat_redis.close()


def _entry(app: Celery, name: str, every: object, **kw: object):  # type: ignore[no-untyped-def]
    from redbeat import RedBeatSchedulerEntry

    return RedBeatSchedulerEntry(name, "demo.pid", every, app=app, **kw)


def _source(app: Celery) -> tuple[RedBeatSource, redis.Redis]:
    client = redis.Redis.from_url(app.conf.broker_url)
    return RedBeatSource(client, key_prefix=app.conf.redbeat_key_prefix), client


def test_entries_as_redbeat_writes_them(app: Celery) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hourly = _entry(app, "hourly", schedule(timedelta(hours=1))).save()
    hourly.reschedule(last_run_at=now - timedelta(minutes=40))
    cron = _entry(app, "five", crontab(minute="*/5")).save()
    cron_last = now.replace(minute=(now.minute // 5) * 5, second=0)
    cron.reschedule(last_run_at=cron_last)
    _entry(app, "paused", schedule(timedelta(seconds=10)), enabled=False).save()
    never = _entry(app, "fresh", schedule(timedelta(seconds=30))).save()
    # beat re-saving the entries at start can leave a score in the past for an entry not due
    client = redis.Redis.from_url(app.conf.broker_url)
    prefix = app.conf.redbeat_key_prefix
    client.zadd(
        prefix + ":schedule", {prefix + "hourly": (now - timedelta(minutes=20)).timestamp()}
    )
    source, reader = _source(app)
    try:
        read = source.read(time.time())
    finally:
        reader.close()
        client.close()
    entries = {e.name: e for e in read.entries}
    assert set(entries) == {"hourly", "five", "paused", "fresh"}
    # judged from the last run and the schedule: due 20 minutes ahead, whatever the score says
    assert entries["hourly"].last_run_at == (now - timedelta(minutes=40)).timestamp()
    assert entries["hourly"].next_due_at == (now + timedelta(minutes=20)).timestamp()
    assert entries["hourly"].score == (now - timedelta(minutes=20)).timestamp()
    assert entries["hourly"].schedule == "every 1 h"
    assert entries["hourly"].period_s == 3600
    assert entries["five"].next_due_at == (cron_last + timedelta(minutes=5)).timestamp()
    assert entries["five"].schedule == "crontab */5 * * * *"
    assert entries["five"].period_s == 300
    assert entries["paused"].enabled is False
    # a new entry: Celery's ScheduleEntry stamps last_run_at with its creation time
    assert entries["fresh"].last_run_at == pytest.approx(time.time(), abs=5)
    assert entries["fresh"].next_due_at == pytest.approx(entries["fresh"].last_run_at + 30)
    # RedBeat computes its score from the clock when it is read, in whole seconds: it can trail
    # last run + interval by up to a second plus the time between save and read (seen: 1.002 s)
    assert entries["fresh"].next_due_at == pytest.approx(never.score, abs=3)
    assert (read.lock_held, read.lock_ttl_s, read.round_trips, read.dropped) == (
        False,
        None,
        2,
        0,
    )


def test_the_lock_and_the_cap(app: Celery) -> None:
    for i in range(5):
        _entry(app, f"e{i}", schedule(timedelta(seconds=60))).save()
    prefix = app.conf.redbeat_key_prefix
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.set(prefix + ":lock", "token", px=25_000)
        source = RedBeatSource(client, key_prefix=prefix, max_entries=3)
        read = source.read(time.time())
    finally:
        client.close()
    assert read.lock_held is True
    assert read.lock_ttl_s is not None and 20 < read.lock_ttl_s <= 25
    assert (len(read.entries), read.dropped) == (3, 2)


def test_an_empty_schedule_is_one_round_trip(app: Celery) -> None:
    source, client = _source(app)
    try:
        read = source.read(time.time())
    finally:
        client.close()
    assert (read.entries, read.round_trips, read.lock_held) == ((), 1, False)
