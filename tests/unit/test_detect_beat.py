"""beat_stopped replayed through evaluate(): periodic entries overdue past the grace, judged from
each entry's last run and schedule; resolved when the schedule advances again."""

from __future__ import annotations

from dataclasses import replace

from oomcheck.model import (
    BeatEntry,
    BeatSchedule,
    Cause,
    ExitEvidence,
    Kind,
    Observation,
    Policy,
    Severity,
)
from oomcheck.report.schedule import schedule_rows, schedule_table
from tests.unit.scenario import T0, Replay, actions, kinds, obs, only

STORE = "RedBeat on redis://127.0.0.1:6379/0, key prefix 'redbeat:'"


def every(name: str, seconds: float, last: float | None, **kw: object) -> BeatEntry:
    """An interval entry as the source reads it: next due one period after its last run."""
    entry = BeatEntry(
        name=name,
        task=f"app.{name}",
        enabled=True,
        schedule=f"every {seconds:g} s",
        last_run_at=last,
        next_due_at=None if last is None else last + seconds,
        period_s=seconds,
    )
    return replace(entry, **kw)  # type: ignore[arg-type]


def beat_obs(
    at: float, entries: list[BeatEntry], *, lock: bool = False, **kw: object
) -> Observation:
    schedule = BeatSchedule(
        scheduler="redbeat.RedBeatScheduler",
        store=STORE,
        entries=tuple(entries),
        lock_held=lock,
        lock_ttl_s=25.0 if lock else None,
    )
    return replace(obs(at, [], **kw), beat=schedule)  # type: ignore[arg-type]


def test_a_running_beat_with_entries_on_time_raises_nothing():
    replay = Replay()
    for i in range(5):
        at = T0 + 60 * i
        # an every-minute entry that ran at this tick, an hourly one that ran 40 min ago
        entries = [every("tick", 60, at), every("hourly", 3600, T0 - 2400)]
        assert kinds(replay.step(beat_obs(at, entries, lock=True))) == []
    assert actions(replay) == []


def test_beat_killed_overdue_entries_named_then_resolved_when_it_sends_again():
    replay = Replay()
    replay.step(beat_obs(T0, [every("tick", 10, T0), every("daily", 86400, T0 - 600)], lock=True))
    # beat dies after T0: within the grace (60 s) nothing is said
    assert kinds(replay.step(beat_obs(T0 + 65, [every("tick", 10, T0)]))) == []
    # past it: beat_stopped, critical, naming the overdue entry, not the daily one
    findings = replay.step(beat_obs(T0 + 95, [every("tick", 10, T0), every("daily", 86400, T0)]))
    stopped = only(findings, Kind.BEAT_STOPPED)
    assert stopped.severity is Severity.CRITICAL
    assert "1 periodic entry is overdue (tick)" in stopped.summary
    assert "no beat runs" in stopped.summary
    entry_lines = [e for e in stopped.evidence if e.startswith("entry ")]
    assert len(entry_lines) == 1
    # due at T0+10, 85 s late, every 10 s: the due run and 8 more were not sent
    assert "entry tick (app.tick): due " in entry_lines[0]
    assert "85 s ago, 9 run(s) missed" in entry_lines[0]
    assert "lock: free, no beat holds it (beat is not running)" in stopped.evidence
    assert any("celery -A" in a and "beat -S redbeat.RedBeatScheduler" in a for a in stopped.advice)
    assert actions(replay, "beat_stopped") == ["open"]
    # beat back: tick ran again
    findings = replay.step(beat_obs(T0 + 130, [every("tick", 10, T0 + 128)], lock=True))
    assert "beat_stopped" not in kinds(findings)
    assert actions(replay, "beat_stopped") == ["open", "resolve"]
    closed = next(i for i in replay.state.incidents.values() if i.kind is Kind.BEAT_STOPPED)
    assert closed.resolution is not None and closed.resolution.startswith("beat sends again: tick")


def test_a_beat_restarting_within_the_grace_raises_nothing():
    replay = Replay()
    replay.step(beat_obs(T0, [every("tick", 10, T0)], lock=True))
    # down for 40 s (30 s past due), then back and sending
    assert kinds(replay.step(beat_obs(T0 + 40, [every("tick", 10, T0)]))) == []
    assert kinds(replay.step(beat_obs(T0 + 50, [every("tick", 10, T0 + 48)], lock=True))) == []
    assert actions(replay) == []


def test_disabled_deleted_and_long_interval_entries_are_never_overdue():
    replay = Replay()
    entries = [
        every("paused", 10, T0 - 3600, enabled=False),
        every("weekly", 7 * 86400, T0 - 86400),
        # the sorted set's score in the past (re-saved when beat started) does not matter
        every("hourly", 3600, T0 - 2400, score=T0 - 1200),
        # unknown schedule kind (solar): listed, never judged
        BeatEntry("sunrise", "app.sun", True, "solar schedule (not judged)", T0 - 99999, None),
    ]
    assert kinds(replay.step(beat_obs(T0, entries))) == []
    # an entry deleted while beat runs is simply absent from the next read
    assert kinds(replay.step(beat_obs(T0 + 600, entries[1:]))) == []


def test_a_lock_still_held_after_beat_died_is_said_and_its_expiry_given():
    replay = Replay()
    findings = replay.step(beat_obs(T0 + 300, [every("tick", 10, T0)], lock=True))
    stopped = only(findings, Kind.BEAT_STOPPED)
    assert "a beat holds the lock but sends nothing" in stopped.summary
    assert any(e.startswith("lock: held, expires in 25 s") for e in stopped.evidence)
    assert any("waits for the lock (about 25 s more)" in a for a in stopped.advice)


def test_the_source_failing_holds_the_incident():
    replay = Replay()
    replay.step(beat_obs(T0 + 300, [every("tick", 10, T0)]))
    # no beat read this run (None): neither refreshed nor resolved
    replay.step(obs(T0 + 360, []))
    assert actions(replay, "beat_stopped") == ["open"]
    assert any(i.is_open for i in replay.state.incidents.values() if i.kind is Kind.BEAT_STOPPED)


def _beat_oom(at: float) -> ExitEvidence:
    return ExitEvidence(
        source="ecs",
        event_id="beat-oom",
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="container celery-beat exitCode 137 OutOfMemoryError",
        hosts=("10.0.9.9",),
        process="celery-beat",
    )


def test_beats_container_oom_kill_is_the_cause_and_arrives_as_an_update():
    replay = Replay(policy=Policy(beat_containers=("celery-beat*",)))
    replay.step(beat_obs(T0, [every("tick", 10, T0)], lock=True))
    first = only(replay.step(beat_obs(T0 + 100, [every("tick", 10, T0)])), Kind.BEAT_STOPPED)
    assert first.cause is Cause.UNKNOWN
    # the ECS record arrives a run later
    findings = replay.step(beat_obs(T0 + 160, [every("tick", 10, T0)], exits=[_beat_oom(T0 + 12)]))
    stopped = only(findings, Kind.BEAT_STOPPED)
    assert (stopped.cause, stopped.exit_code) == (Cause.OOM_KILLED, 137)
    assert any("OutOfMemoryError" in e for e in stopped.evidence)
    assert any("OOM-killed" in a for a in stopped.advice)
    # beat's own death is not also an OOM kill "of an unknown worker"
    assert "oom_kill" not in kinds(findings)
    assert actions(replay, "beat_stopped") == ["open", "update"]
    # the next run (the evidence no longer fresh) keeps the cause
    later = only(replay.step(beat_obs(T0 + 220, [every("tick", 10, T0)])), Kind.BEAT_STOPPED)
    assert later.cause is Cause.OOM_KILLED
    assert any("OutOfMemoryError" in e for e in later.evidence)


def test_an_oom_of_a_container_that_is_not_beat_stays_an_unknown_oom_kill():
    replay = Replay(policy=Policy(beat_containers=("celery-beat",)))
    other = replace(_beat_oom(T0 + 12), process="sidecar", event_id="x")
    findings = replay.step(beat_obs(T0 + 100, [every("tick", 10, T0)], exits=[other]))
    assert only(findings, Kind.BEAT_STOPPED).cause is Cause.UNKNOWN
    assert "oom_kill" in kinds(findings)


def test_the_schedule_block_lists_every_entry_and_whether_it_is_late():
    schedule = BeatSchedule(
        "redbeat.RedBeatScheduler",
        STORE,
        (every("tick", 10, T0), every("paused", 10, T0, enabled=False), every("daily", 86400, T0)),
        lock_held=False,
    )
    rows = {r["name"]: r for r in schedule_rows(schedule, T0 + 100, 60.0)}
    assert rows["tick"]["late"] is True and rows["tick"]["missed"] == 10
    assert rows["tick"]["interval_s"] == 10
    assert rows["paused"]["late"] is False
    assert rows["daily"]["late"] is False and rows["daily"]["late_s"] is None
    assert rows["daily"]["next_due_at"].startswith("2026-09-2")
    table = "\n".join(schedule_table(tuple(rows.values())))
    assert "LATE 90s, 10 missed" in table and "disabled" in table


def test_a_hash_without_meta_is_due_at_its_score_and_bad_json_is_skipped():
    import json

    from oomcheck.sources.beat import entry_from_hash, is_redbeat, off_reason

    definition = json.dumps(
        {"name": "n", "task": "t", "schedule": {"__type__": "interval", "every": 30}}
    )
    entry = entry_from_hash("n", definition.encode(), None, T0)
    assert entry is not None
    assert (entry.last_run_at, entry.next_due_at, entry.period_s) == (None, T0, 30.0)
    assert entry_from_hash("n", b"{not json", None, T0) is None
    assert entry_from_hash("n", None, None, T0) is None
    solar = json.dumps({"name": "s", "task": "t", "schedule": {"__type__": "solar"}})
    unknown = entry_from_hash("s", solar, None, -1)
    assert unknown is not None and unknown.next_due_at is None and unknown.score is None
    assert is_redbeat("redbeat:RedBeatScheduler") and is_redbeat("redbeat.RedBeatScheduler")
    assert not is_redbeat("django_celery_beat.schedulers:DatabaseScheduler")
    assert "Django database" in off_reason("django_celery_beat.schedulers:DatabaseScheduler")
    assert "Django database" in off_reason("django_celery_beat.schedulers.DatabaseScheduler")
    assert "no beat scheduler configured" in off_reason(None)


def _run_killed(at: float, run: int, entry: BeatEntry) -> Observation:
    """A check at ``at``: the pool child running ``run-<run>`` of the entry's task was SIGKILLed
    (its WorkerLostError in the result backend), the worker itself alive."""
    from oomcheck.model import LostFailure
    from tests.unit.scenario import snap

    failure = LostFailure(
        id=f"run-{run}",
        message="Worker exited prematurely: signal 9 (SIGKILL) Job: 0.",
        name="app.report",
        worker=WORKER,
        signal=9,
        written_at=at - 1,
        cause=Cause.KILLED,
    )
    return replace(
        obs(at, [snap(WORKER, at=at)], lost=[failure]),
        beat=beat_obs(at, [replace(entry, last_run_at=at - 2, next_due_at=at + 8)], lock=True).beat,
    )


WORKER = "celery@ip-10-0-1-5"


def test_a_periodic_task_killed_on_three_runs_is_a_kill_loop_by_entry():
    entry = every("nightly-report", 10, T0, task="app.report")
    replay = Replay()
    replay.step(replace(obs(T0, []), beat=beat_obs(T0, [entry], lock=True).beat))
    history = [replay.step(_run_killed(T0 + 10 * i, i, entry)) for i in range(1, 4)]
    # each run had a new id: no loop per id, and one per entry
    loops = [f for f in history[-1] if f.kind is Kind.POISON_TASK]
    assert len(loops) == 1
    loop = loops[0]
    assert loop.key is not None and loop.key.subject == "entry:nightly-report"
    assert loop.summary.startswith("beat entry nightly-report (app.report): 3 runs in a row")
    assert [t.id for t in loop.tasks] == ["run-1", "run-2", "run-3"]
    assert any(a.startswith("Each run of nightly-report") for a in loop.advice)
    assert [f for f in history[1] if f.kind is Kind.POISON_TASK] == []
    # the deaths themselves say which entry the dead task came from and when it runs next
    killed = [f for h in history for f in h if f.kind is Kind.CHILD_KILLED]
    assert killed
    assert any(
        e.startswith("periodic: app.report is sent by beat entry nightly-report (every 10 s)")
        for e in killed[0].evidence
    )
    assert actions(replay, "poison_task") == ["open"]
    # quiet for longer than poison_quiet_s: the loop is over
    later = T0 + 30 + Policy().poison_quiet_s + 10
    replay.step(replace(obs(later, []), beat=beat_obs(later, [entry], lock=True).beat))
    assert actions(replay, "poison_task") == ["open", "resolve"]


def test_two_killed_runs_of_a_periodic_task_are_not_a_loop():
    entry = every("nightly-report", 10, T0, task="app.report")
    replay = Replay()
    replay.step(replace(obs(T0, []), beat=beat_obs(T0, [entry], lock=True).beat))
    killed = [
        only(replay.step(_run_killed(T0 + 10 * i, i, entry)), Kind.CHILD_KILLED)
        for i in range(1, 3)
    ]
    assert actions(replay, "poison_task") == []
    assert [f.tasks[0].id for f in killed] == ["run-1", "run-2"]
