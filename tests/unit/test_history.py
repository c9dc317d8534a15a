"""History by task type (issue 21): deaths and pressure onsets kept per task name through
evaluate(), written only when they change, and the audit's ranking of a scripted week."""

from __future__ import annotations

import json

from oomcheck.detect.history import peak_share
from oomcheck.model import Cause, Kind, MemoryPoint, Verdict
from oomcheck.report.events import run_events
from oomcheck.report.history import history_block
from oomcheck.report.table import history_table
from oomcheck.store import codec
from tests.unit.scenario import T0, Replay, ecs_oom, mem, obs, snap, started, task

DAY = 86400.0


def _die(replay: Replay, at: float, pod: str, names: list[str], *, pressure: bool = False) -> None:
    """A worker on ``pod`` runs tasks of ``names``, then is OOM-killed (ECS says so)."""
    worker = f"celery@{pod}"
    ids = [f"{pod}-t{i}" for i in range(len(names))]
    active = [
        task(i, 101, name=n, start=at - 60, acknowledged=True)
        for i, n in zip(ids, names, strict=True)
    ]
    work = [started(i, worker, name=n, written=at - 60) for i, n in zip(ids, names, strict=True)]
    samples = [mem(pod, 1900, at - 40), mem(pod, 1990, at - 10)] if pressure else None
    replay.step(obs(at, [snap(worker, active=active, at=at)], started_=work, memory=samples))
    dead = obs(at + 60, [], started_=work, exits=[ecs_oom(pod, at=at + 50, event_id=f"e-{pod}")])
    replay.step(dead)
    replay.step(obs(at + 65, [], started_=work))


def test_a_death_under_pressure_is_kept_per_task_name_with_its_peak_and_onset():
    replay = Replay()
    _die(replay, T0, "pod-a", ["app.grow", "app.small", "app.small"], pressure=True)
    grow = replay.state.task_history["app.grow"]
    [death] = grow.deaths
    assert (death.kind, death.cause, death.worker) == (
        Kind.WORKER_LOST,
        Cause.OOM_KILLED,
        "celery@pod-a",
    )
    assert death.victims == 1 and death.lost == 1
    assert death.peak_share == round(1990 / 2048, 4)
    # it was running when the pressure began: one onset, under the same worker
    assert [p.worker for p in grow.pressure] == ["celery@pod-a"]
    # two app.small tasks died in the same death: one death, two victims
    [small] = replay.state.task_history["app.small"].deaths
    assert (small.incident_id, small.victims) == (death.incident_id, 2)


def test_history_is_written_only_when_something_changes():
    replay = Replay()
    _die(replay, T0, "pod-a", ["app.grow"])
    before = replay.state
    # a quiet run after the death changed: nothing about the history is written
    replay.step(obs(T0 + 120, [], started_=[]))
    assert replay.state.task_history["app.grow"] is before.task_history["app.grow"]
    puts, deletes = codec.changed_items(before, replay.state)
    assert not [k for k in puts if k.startswith("history#")] and not deletes
    # and it reads back from the store as it was written
    items = codec.state_to_items(replay.state)
    assert codec.state_from_items(items).task_history == replay.state.task_history


def test_history_leaves_the_window_and_its_item_is_deleted():
    replay = Replay()
    _die(replay, T0, "pod-a", ["app.grow"])
    before = replay.state
    replay.step(obs(T0 + 31 * DAY, [], started_=[]))
    assert "app.grow" not in replay.state.task_history
    _, deletes = codec.changed_items(before, replay.state)
    assert "history#app.grow" in deletes


def test_a_death_counts_once_in_the_run_events_however_many_runs_see_it():
    replay = Replay()
    _die(replay, T0, "pod-a", ["app.grow", "app.grow"])
    # the run that opened it (its second step) against the state before it
    replay2 = Replay()
    worker = "celery@pod-b"
    active = [task("b1", 101, name="app.grow", start=T0 - 60, acknowledged=True)]
    work = [started("b1", worker, name="app.grow", written=T0 - 60)]
    replay2.step(obs(T0, [snap(worker, active=active)], started_=work))
    loaded = replay2.state
    replay2.step(obs(T0 + 60, [], started_=work, exits=[ecs_oom("pod-b", at=T0 + 50)]))
    opened = run_events(loaded, replay2.state)
    assert opened.deaths() == {Cause.OOM_KILLED: 1}
    assert opened.victims == {Verdict.LOST: 1} and opened.task_names == ("app.grow",)
    assert opened.deaths_by_task == {"app.grow": 1}
    again = replay2.state
    replay2.step(obs(T0 + 120, [], started_=work))
    assert run_events(again, replay2.state).deaths() == {}


def _scripted_week() -> Replay:
    replay = Replay()
    day = T0
    # nine days ago, outside a 7-day window: emails.send died five times
    for i in range(5):
        _die(replay, day - 9 * DAY + i * 600, f"pod-old{i}", ["emails.send"])
    # this week: reports.build died 4 times (twice alongside media.resize), media.resize 3
    # times, one of them under memory pressure; emails.send once
    for i in range(4):
        names = ["reports.build", "media.resize"] if i < 2 else ["reports.build"]
        _die(replay, day - (6 - i) * DAY, f"pod-r{i}", names)
    _die(replay, day - 1 * DAY, "pod-m", ["media.resize"], pressure=True)
    _die(replay, day - 0.5 * DAY, "pod-e", ["emails.send"])
    return replay


def test_audit_since_a_week_ranks_task_types_by_kills_as_a_person_would():
    replay = _scripted_week()
    now = T0 + 3600
    block = history_block(replay.state.task_history, replay.state.pressure, 7 * DAY, now)
    rows = block["tasks"]
    assert [(r["task"], r["deaths"]) for r in rows] == [
        ("reports.build", 4),
        ("media.resize", 3),
        ("emails.send", 1),
    ]
    media = rows[1]
    assert media["by_cause"] == {"oom_killed": 3} and media["lost"] == 3
    assert media["peak_share"] == round(1990 / 2048, 4) and media["pressure_onsets"] == 1
    # what to do: the seed's advice, where it fits
    assert any("dedicated queue" in a for a in media["advice"])
    assert any("chunks" in a for a in media["advice"])
    assert any("worker_max_memory_per_child" in a for a in media["advice"])
    # over 30 days the old kill loop of emails.send comes first
    month = history_block(replay.state.task_history, replay.state.pressure, 30 * DAY, now)
    assert [r["task"] for r in month["tasks"]][:1] == ["emails.send"]
    assert month["tasks"][0]["deaths"] == 6
    # the table a person reads
    table = "\n".join(history_table(block))
    assert "TOP TASK TYPES BY KILLS (last 7 days)" in table
    first = next(line for line in table.splitlines() if line.startswith("reports.build"))
    assert first.split()[1:4] == ["4", "4", "4"]


def test_rising_memory_names_workers_whose_samples_grow():
    points = {
        "celery@up": (MemoryPoint(T0, 1800, 2048), MemoryPoint(T0 + 60, 1900, 2048)),
        "celery@flat": (MemoryPoint(T0, 1900, 2048), MemoryPoint(T0 + 60, 1900, 2048)),
    }
    block = history_block({}, points, 7 * DAY, T0 + 60)
    assert [(r["worker"], r["trend_mb_per_min"]) for r in block["rising_memory"]] == [
        ("celery@up", 100.0)
    ]
    # a worker no longer running is not rising, whatever its last samples said
    assert (
        history_block({}, points, 7 * DAY, T0 + 60, running={"celery@flat"})["rising_memory"] == []
    )
    assert peak_share(points["celery@up"]) == round(1900 / 2048, 4)


def test_a_kill_loop_keeps_its_newest_deaths_within_one_dynamodb_item():
    from oomcheck.detect import history
    from oomcheck.model import Finding, Incident, IncidentKey, Policy, Severity, State, TaskFate

    def death(n: int) -> Incident:
        fate = TaskFate(f"t{n}", "app.loop." + "x" * 150, "STARTED", T0, Verdict.KILL_LOOP)
        finding = Finding(
            Kind.WORKER_LOST,
            Severity.CRITICAL,
            f"celery@worker-{n:05d}-" + "y" * 100,
            cause=Cause.OOM_KILLED,
            tasks=(fate,),
        )
        key = IncidentKey(Kind.WORKER_LOST, f"w{n}:1")
        return Incident(f"inc-{n:012d}", key, Kind.WORKER_LOST, T0 + n * 60, finding)

    incidents = {i.id: i for i in (death(n) for n in range(history.MAX_ENTRIES + 100))}
    after = history.recorded(State(), incidents, Policy(), T0 + 700 * 60)
    [kept] = after.values()
    assert len(kept.deaths) == history.MAX_ENTRIES
    assert kept.deaths[0].incident_id == "inc-000000000100"  # the oldest 100 fell out
    encoded = json.dumps(codec.history_to_json(kept)).encode()
    assert len(encoded) < 400 * 1024 / 2, len(encoded)
