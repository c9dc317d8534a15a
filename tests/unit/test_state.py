"""State stores: round trips, writes proportional to changes, leases that stop double alerts."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from oomcheck.model import (
    Action,
    Cause,
    Kill,
    KillRecord,
    MemoryPoint,
    PendingAlert,
    State,
    WorkerStatus,
)
from oomcheck.store import codec
from oomcheck.store.base import LeaseBusy, LeaseLost, StateError
from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition
from oomcheck.store.file import FileStateStore
from tests.unit.scenario import LIMITS, T0, Replay, obs, snap, started, task

W = "celery@ip-10-0-1-5"


def _busy_state() -> State:
    """A state with a roster, an open incident with a pending alert, and kill counts."""
    replay = Replay(deliver=False)
    replay.step(
        obs(
            T0,
            [snap(W, active=[task("t1")], limits=LIMITS), snap("celery@b", pid=7)],
            started_=[started("t1", W)],
        )
    )
    replay.step(obs(T0 + 60, [snap("celery@b", pid=7, at=T0 + 60)], started_=[started("t1", W)]))
    return replay.state


def test_codec_round_trip_is_exact():
    state = _busy_state()
    assert state.incidents and state.kills and state.workers
    assert codec.state_from_items(codec.state_to_items(state)) == state


@pytest.fixture
def dynamo():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**table_definition("oomcheck-test"))
        yield client


def test_dynamodb_round_trip_and_writes_only_changes(dynamo):
    store = DynamoDBStateStore("oomcheck-test", client=dynamo)
    state = _busy_state()
    store.acquire("run-1", T0, 60)
    first = store.save("run-1", State(), state, retention_s=86400)
    assert first.writes == len(codec.state_to_items(state)) - 1  # all but meta
    store.release("run-1", state)
    assert store.load() == state
    # a run that changes nothing writes nothing but the lease
    store.acquire("run-2", T0 + 60, 60)
    assert store.save("run-2", state, state, retention_s=86400).writes == 0
    # one worker changes: one write
    changed = replace(
        state,
        workers={
            **state.workers,
            "celery@b": replace(state.workers["celery@b"], status=WorkerStatus.DEPARTED),
        },
    )
    assert store.save("run-2", state, changed, retention_s=86400).writes == 1
    store.release("run-2", changed)
    assert store.load() == changed


def test_dynamodb_items_of_finished_things_get_a_ttl(dynamo):
    store = DynamoDBStateStore("oomcheck-test", client=dynamo)
    state = _busy_state()
    departed = replace(state.workers["celery@b"], status=WorkerStatus.DEPARTED)
    state = replace(state, workers={**state.workers, "celery@b": departed})
    store.acquire("r", T0, 60)
    store.save("r", State(), state, retention_s=1000)
    items = {i["sk"]["S"]: i for i in dynamo.scan(TableName="oomcheck-test")["Items"]}
    assert "expires_at" in items["worker#celery@b"]
    assert "expires_at" not in items[f"worker#{W}"]  # lost with an open incident: kept


def test_dynamodb_lease_blocks_an_overlapping_run(dynamo):
    first = DynamoDBStateStore("oomcheck-test", client=dynamo)
    second = DynamoDBStateStore("oomcheck-test", client=dynamo)
    first.acquire("run-a", T0, 60)
    with pytest.raises(LeaseBusy):
        second.acquire("run-b", T0 + 1, 60)
    # an expired lease can be taken over, and then the stalled run can no longer write
    second.acquire("run-b", T0 + 61, 60)
    with pytest.raises(LeaseLost):
        first.save("run-a", State(), _busy_state(), retention_s=86400)
    with pytest.raises(LeaseLost):
        first.release("run-a", State())


_RACER = """
import sys, time
import boto3
from oomcheck.store.dynamodb import DynamoDBStateStore
from oomcheck.store.base import LeaseBusy
endpoint, name, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
client.describe_table(TableName="oomcheck-race")  # connected and warm before the start
for round_ in range(rounds):
    # each round races for the lease of its own target, all racers at the same instant
    store = DynamoDBStateStore("oomcheck-race", target=f"round-{round_}", client=client)
    time.sleep(max(0.0, start + round_ * 0.3 - time.time()))
    try:
        store.acquire(name, 1790000000.0, 60)
        print("acquired", flush=True)
    except LeaseBusy:
        print("busy", flush=True)
"""


@pytest.fixture(scope="module")
def moto_endpoint():
    from tests.awsfaults import serial_moto

    with serial_moto() as endpoint:
        yield endpoint


def test_concurrent_runs_only_one_writes(moto_endpoint):
    """Four processes race for the lease, five times, on a server that applies one conditional
    write at a time as DynamoDB does: exactly one wins each race."""
    import os
    import subprocess
    import sys
    import time

    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_table(**table_definition("oomcheck-race"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rounds, start = 5, time.time() + 3.0
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, moto_endpoint, f"run-{i}", str(start), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(4)
    ]
    outcomes = [racer.communicate(timeout=30)[0].split() for racer in racers]
    assert all(len(o) == rounds for o in outcomes), outcomes
    for round_ in range(rounds):
        assert sorted(o[round_] for o in outcomes) == ["acquired", "busy", "busy", "busy"]


def test_dynamodb_unreachable_is_a_state_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    store = DynamoDBStateStore("nope")
    with pytest.raises(StateError):
        store.load()


def test_file_store_round_trip_lock_and_corruption(tmp_path):
    path = tmp_path / "state.json"
    store = FileStateStore(str(path))
    state = _busy_state()
    store.acquire("r1", T0, 60)
    other = FileStateStore(str(path))
    with pytest.raises(LeaseBusy):
        other.acquire("r2", T0, 60)
    store.save("r1", State(), state, retention_s=86400)
    store.release("r1", state)
    assert FileStateStore(str(path)).load() == state
    other.acquire("r2", T0, 60)  # free again after release
    other.release("r2", state)
    path.write_text("{not json")
    with pytest.raises(StateError, match="not oomcheck state"):
        FileStateStore(str(path)).load()


def test_pending_alert_survives_a_round_trip(tmp_path):
    state = _busy_state()
    incident = next(iter(state.incidents.values()))
    failed = replace(
        incident, pending=(PendingAlert(Action.OPEN, T0, attempts=2, last_error="Throttling"),)
    )
    state = replace(state, incidents={incident.id: failed})
    assert codec.state_from_items(codec.state_to_items(state)).incidents[incident.id] == failed


def test_changed_items_equals_a_full_diff():
    replay = Replay(deliver=False)
    states = [replay.state]
    steps = [
        obs(
            T0,
            [snap(W, active=[task("t1")], limits=LIMITS), snap("celery@b", pid=7)],
            started_=[started("t1", W)],
        ),
        obs(
            T0 + 60,
            [
                snap(W, active=[task("t1")], limits=LIMITS, at=T0 + 60),
                snap("celery@b", pid=7, at=T0 + 60),
            ],
            started_=[started("t1", W)],
        ),
        obs(T0 + 120, [snap("celery@b", pid=7, at=T0 + 120)], started_=[started("t1", W)]),
        obs(T0 + 180, [snap("celery@b", pid=8, boot=T0 + 170, at=T0 + 180)]),
    ]
    for step in steps:
        replay.step(step)
        states.append(replay.state)
    for before, after in itertools.pairwise(states):
        old, new = codec.state_to_items(before), codec.state_to_items(after)
        old.pop("meta"), new.pop("meta")
        expected_puts = {k: v for k, v in new.items() if old.get(k) != v}
        expected_deletes = sorted(k for k in old if k not in new)
        assert codec.changed_items(before, after) == (expected_puts, expected_deletes)
    # the unchanged healthy run encodes and writes nothing
    assert codec.changed_items(states[1], states[2])[0] == {}


def test_warm_store_reads_the_table_only_after_another_writer(dynamo):
    calls: list[str] = []
    dynamo.meta.events.register("before-call.dynamodb.Query", lambda **_: calls.append("q"))
    a = DynamoDBStateStore("oomcheck-test", client=dynamo)
    b = DynamoDBStateStore("oomcheck-test", client=dynamo)
    state = _busy_state()
    a.acquire("a1", T0, 60)
    a.save("a1", a.load(), state, retention_s=86400)
    a.release("a1", state)
    assert calls == ["q"]
    # the same container's next run: the lease item's version is the one it wrote
    a.acquire("a2", T0 + 5, 60)
    assert a.load() == state and calls == ["q"]
    a.release("a2", state)
    # another container writes: the version moves and the first reads the table again
    b.acquire("b1", T0 + 10, 60)
    changed = replace(state, workers={k: v for k, v in state.workers.items() if k != "celery@b"})
    b.save("b1", b.load(), changed, retention_s=86400)
    b.release("b1", changed)
    a.acquire("a3", T0 + 15, 60)
    assert a.load() == changed
    assert calls == ["q", "q", "q"]
    # an audit takes no lease and always reads
    a.release("a3", changed)
    assert a.load() == changed and len(calls) == 4


def test_a_kill_keeps_its_cause_and_an_older_record_without_one_reads_as_unknown():
    record = KillRecord("t1", "app.loop", (Kill("w@h", 101, T0, "kernel: ...", Cause.OOM_KILLED),))
    encoded = codec.kills_to_json(record)
    assert codec.kills_from_json(json.loads(json.dumps(encoded))) == record
    encoded["kills"][0].pop("cause")
    assert codec.kills_from_json(encoded).kills[0].cause == Cause.UNKNOWN


def test_pressure_points_keep_their_basis_and_older_ones_read_as_a_limit():
    state = State(pressure={"w@h": (MemoryPoint(T0, 1990.0, 2048.0, "ECS reservation"),)})
    items = codec.state_to_items(state)
    assert codec.state_from_items(json.loads(json.dumps(items))) == state
    key = next(k for k in items if k.startswith("pressure#"))
    items[key]["points"][0] = items[key]["points"][0][:3]
    assert codec.state_from_items(items).pressure["w@h"][0].basis == "limit"
