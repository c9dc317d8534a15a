"""beat_stopped with a real ``celery beat -S redbeat.RedBeatScheduler`` on a real Redis: beat
SIGKILLed -> the alert names the overdue entries, resolved when beat returns; a running beat with
an entry deleted and a long-interval entry -> nothing; an app without RedBeat -> the source off."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from oomcheck.demo.beat import BeatProcess
from oomcheck.demo.workers import wait_for
from oomcheck.model import Kind, SourceState
from oomcheck.report.document import Report
from tests.integration.conftest import Fleet, poll_checks

SCHEDULE = {
    "tick": {"task": "demo.pid", "every": 1},
    "also-tick": {"task": "demo.sleepy", "every": 2, "args": [0]},
    "hourly": {"task": "demo.pid", "every": 3600},
}


@pytest.fixture
def beat_fleet(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet's checker reading RedBeat under a prefix of its own, with a 2 s grace."""
    prefix = f"rb-{uuid.uuid4().hex[:8]}:"
    fleet.overrides = {
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_key_prefix": prefix,
        "policy": fleet.settings().policy.__class__(beat_grace_s=2.0),
    }
    yield fleet


def _beat(fleet: Fleet, tmp: Path, name: str = "beat") -> BeatProcess:
    return BeatProcess(
        fleet.broker,
        SCHEDULE,
        key_prefix=fleet.settings().redbeat_key_prefix,
        lock_timeout_s=3,
        log_path=str(tmp / f"{name}.log"),
        cwd=str(tmp),
    ).start()


def _runs(fleet: Fleet, entry: str) -> int:
    """total_run_count of an entry, as RedBeat wrote it (0 before its first run)."""
    client = redis.Redis.from_url(fleet.broker)
    try:
        meta = client.hget(fleet.settings().redbeat_key_prefix + entry, "meta")
    finally:
        client.close()
    if not meta:
        return 0
    import json

    return int(json.loads(meta).get("total_run_count") or 0)


def _stopped(report: Report) -> list:
    return [f for f in report.findings if f.kind is Kind.BEAT_STOPPED]


def test_beat_sigkilled_is_beat_stopped_naming_the_entries_then_resolved_when_it_returns(
    beat_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = beat_fleet
    beat = _beat(fleet, tmp_path)
    try:
        wait_for(lambda: _runs(fleet, "tick") >= 2, 30, what="beat sending tick")
        # Given a running beat: nothing (a check lists no late entry), and an audit lists the
        # whole schedule
        report = fleet.check()
        assert _stopped(report) == []
        assert report.sources["beat"].state is SourceState.OK
        assert report.schedule == ()
        rows = {r["name"]: r for r in fleet.check("audit").schedule or ()}
        assert set(rows) == set(SCHEDULE)
        assert rows["tick"]["late"] is False and rows["tick"]["interval_s"] == 1.0
        # When beat is SIGKILLed
        beat.kill()
        report = poll_checks(fleet, lambda r: bool(_stopped(r)), timeout=20, interval=0.5)
        # Then beat_stopped names the overdue entries (not the hourly one)
        stopped = _stopped(report)[0]
        assert stopped.alertable
        entries = [e for e in stopped.evidence if e.startswith("entry ")]
        assert any(e.startswith("entry tick (demo.pid): due ") for e in entries)
        assert not any(e.startswith("entry hourly") for e in entries)
        assert "run(s) missed" in entries[0]
        assert any(e.startswith("lock: ") for e in stopped.evidence)
        assert [m.kind for m in fleet.publisher.messages].count("beat_stopped") == 1
        rows = {r["name"]: r for r in report.schedule or ()}
        assert rows["tick"]["late"] is True and rows["tick"]["missed"] >= 1
        assert "hourly" not in rows
        # When beat comes back (it waits for the dead beat's lock to expire, 3 s)
        beat = _beat(fleet, tmp_path, "beat-2")
        report = poll_checks(fleet, lambda r: not _stopped(r), timeout=30, interval=0.5)
        # Then it is resolved, saying the entries run again
        resolved = [m for m in fleet.publisher.messages if m.kind == "beat_stopped"]
        assert len(resolved) == 2
        assert "beat sends again" in str(resolved[-1])
    finally:
        beat.stop()


def test_a_running_beat_with_a_deleted_and_a_long_entry_raises_nothing(
    beat_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = beat_fleet
    beat = _beat(fleet, tmp_path)
    try:
        wait_for(lambda: _runs(fleet, "also-tick") >= 1, 30, what="beat sending also-tick")
        # When an entry is deleted while beat runs (as RedBeat's own delete does it)
        prefix = fleet.settings().redbeat_key_prefix
        client = redis.Redis.from_url(fleet.broker)
        try:
            client.zrem(prefix + ":schedule", prefix + "also-tick")
            client.delete(prefix + "also-tick")
        finally:
            client.close()
        # Then checks over several seconds (past the grace) find nothing
        began = time.monotonic()
        for _ in range(5):
            report = fleet.check()
            assert _stopped(report) == [], report.findings
            assert report.schedule == ()
            time.sleep(0.5)
        # tick (every 1 s) was due several times meanwhile: beat kept sending it
        assert time.monotonic() - began > 2 * fleet.settings().policy.beat_grace_s
        assert fleet.publisher.messages == []
        audit = fleet.check("audit")
        assert {r["name"] for r in audit.schedule or ()} == {"tick", "hourly"}
    finally:
        beat.stop()


def test_an_app_without_redbeat_has_the_beat_source_off_and_no_error(fleet: Fleet) -> None:
    fleet.overrides = {"beat_scheduler": "celery.beat:PersistentScheduler"}
    report = fleet.check()
    status = report.sources["beat"]
    assert status.state is SourceState.OFF
    assert "shelve file on beat's own disk" in status.detail
    assert report.schedule is None
    assert "beat" not in report.to_json().get("schedule", [])
    assert _stopped(report) == []


def test_a_periodic_task_killed_with_its_worker_on_three_runs_is_a_kill_loop_by_entry(
    beat_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = beat_fleet
    beat = BeatProcess(
        fleet.broker,
        {"crunch": {"task": "demo.sleepy", "every": 2, "args": [120]}},
        key_prefix=fleet.settings().redbeat_key_prefix,
        lock_timeout_s=3,
        log_path=str(tmp_path / "beat.log"),
        cwd=str(tmp_path),
    ).start()
    try:
        report = None
        for run in range(3):
            # Given a worker running one run of the periodic task (each run a new task id)
            name = f"periodic-{run}@oomcheck-test"
            worker = fleet.start(name)
            poll_checks(
                fleet,
                lambda r, n=name: any(w["name"] == n and w["active"] for w in r.workers),
                timeout=20,
                interval=0.5,
            )
            # When the worker is SIGKILLed with it
            worker.kill(signal.SIGKILL)
            worker.wait()
            report = poll_checks(
                fleet,
                lambda r, n=name: any(
                    f.kind is Kind.WORKER_LOST and f.worker == n for f in r.findings
                ),
                timeout=15,
                interval=0.5,
            )
            lost = next(
                f for f in report.findings if f.kind is Kind.WORKER_LOST and f.worker == name
            )
            # the death says which beat entry the task came from and when it runs next
            assert any(
                e.startswith("periodic: demo.sleepy is sent by beat entry crunch (every 2 s)")
                for e in lost.evidence
            )
        # Then, on the third run, a kill loop counted by entry, not by task id
        assert report is not None
        loops = [f for f in report.findings if f.kind is Kind.POISON_TASK]
        assert [f.key.subject for f in loops if f.key] == ["entry:crunch"]
        assert len({t.id for t in loops[0].tasks}) == 3
        assert "poison_task" in [m.kind for m in fleet.publisher.messages]
    finally:
        beat.stop()


def test_the_beat_demo_shows_the_alert_naming_the_jobs_that_stopped() -> None:
    from oomcheck.demo.beat import run_beat_demo

    lines: list[str] = []
    assert run_beat_demo(out=lines.append) == 0
    shown = "\n".join(lines)
    assert "ALERT [oomcheck] CRITICAL: celery beat stopped" in shown
    assert "entry send-invoices (demo.pid): due " in shown
    assert "entry sync-inventory (demo.pid): due " in shown
    assert "entry nightly-report" not in shown
    assert "RESOLVED" in lines[-1]
