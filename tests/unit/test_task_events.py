"""An EventBridge event per victim task's verdict: once per verdict, the same key on a retry,
within the run's deadline and PutEvents' limit of ten entries per call."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from oomcheck.alerting import delivery
from oomcheck.alerting.outbox import SentJournal
from oomcheck.alerting.taskevents import DETAIL_TYPE, EventBridgeTaskEvents
from oomcheck.deadline import Deadline
from oomcheck.model import TaskFate, Verdict
from oomcheck.store.file import FileStateStore
from tests.unit.incidents import T0, incident, state_of
from tests.unit.test_delivery import FakeClock, Topic


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("events"), boto3.client("sqs")


def _bus_to_queue(events: Any, sqs: Any) -> str:
    """The README's rule: task verdicts on the bus go to the application's queue."""
    events.create_event_bus(Name="oncall")
    url = sqs.create_queue(QueueName="app-task-verdicts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="oomcheck-task-verdicts",
        EventBusName="oncall",
        EventPattern=json.dumps({"source": ["oomcheck"], "detail-type": [DETAIL_TYPE]}),
    )
    events.put_targets(
        Rule="oomcheck-task-verdicts", EventBusName="oncall", Targets=[{"Id": "q", "Arn": arn}]
    )
    return str(url)


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(200):  # bounded: ten per receive
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        got += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)
            ],
        )
    return got


def _commit(path: str, sink: Any, state: Any = None, *, budget: float = 30.0, clock=None):
    store = FileStateStore(path)
    store.acquire("run", T0, 60)
    loaded = store.load()
    clock = clock or FakeClock()
    box = delivery.Outbox(
        publisher=Topic(clock),
        store=store,
        owner="run",
        retention_s=86400,
        deadline=Deadline.after(budget, clock),
        publish_s=0.5,
        finish_s=0.5,
        journal=SentJournal(),
        task_events=sink,
    )
    try:
        return delivery.commit(box, loaded, state or loaded, T0)
    finally:
        store.abandon("run")


def test_each_victim_task_gets_one_event_and_a_redelivery_one_more(aws, tmp_path):
    events, sqs = aws
    queue = _bus_to_queue(events, sqs)
    sink = EventBridgeTaskEvents("oncall", client=events)
    path = str(tmp_path / "state.json")
    # Given a worker death with three victims: two lost, one awaiting redelivery
    death = incident(1, tasks=3, awaiting=1)
    # When a run delivers
    first = _commit(path, sink, state_of(death))
    # Then three task events reach the application's queue, with the finding's verdicts
    got = _drain(sqs, queue)
    assert [e["detail-type"] for e in got] == [DETAIL_TYPE] * 3
    details = {e["detail"]["task_id"]: e["detail"] for e in got}
    assert {t.id: t.verdict.value for t in death.finding.tasks} == {
        k: d["verdict"] for k, d in details.items()
    }
    awaiting = death.finding.tasks[0]
    assert details[awaiting.id]["redeliver_at"] == awaiting.redeliver_at
    row = details[awaiting.id]
    assert row["incident_id"] == "inc-0001" and row["worker"] == "celery@worker-1"
    assert row["cause"] == "oom_killed" and row["task_name"] == awaiting.name
    assert row["dedup_key"] == f"inc-0001:{awaiting.id}:awaiting_redelivery"
    assert "args" not in json.dumps(row) and "kwargs" not in json.dumps(row)
    assert first.delivered.task_events.calls == 1
    # When the next run finds nothing new
    _commit(path, sink)
    assert _drain(sqs, queue) == []
    # When the awaited task is redelivered
    saved = FileStateStore(path).load()
    before = saved.incidents["inc-0001"]
    tasks = tuple(
        replace(t, verdict=Verdict.REDELIVERED) if t.id == awaiting.id else t
        for t in before.finding.tasks
    )
    after = replace(before, finding=replace(before.finding, tasks=tasks))
    _commit(path, sink, replace(saved, incidents={"inc-0001": after}))
    # Then that task, and only it, gets one more event
    [again] = _drain(sqs, queue)
    assert again["detail"]["task_id"] == awaiting.id
    assert again["detail"]["verdict"] == "redelivered"
    assert again["detail"]["dedup_key"] == f"inc-0001:{awaiting.id}:redelivered"


class CountingEvents:
    """PutEvents that takes ``seconds`` per call on the run's clock and checks its limits."""

    def __init__(self, clock: FakeClock, seconds: float, fail_every: int = 0) -> None:
        self.clock = clock
        self.seconds = seconds
        self.calls = 0
        self.fail_every = fail_every
        self.keys: list[str] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert 1 <= len(Entries) <= 10
        assert sum(len(json.dumps(e)) for e in Entries) < 256 * 1024
        self.calls += 1
        self.clock.now += self.seconds
        results = []
        for n, e in enumerate(Entries):
            if self.fail_every and n % self.fail_every == 0:
                results.append({"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"})
            else:
                self.keys.append(json.loads(e["Detail"])["dedup_key"])
                results.append({"EventId": f"e-{len(self.keys)}"})
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedEntryCount": failed, "Entries": results}


def test_a_thousand_victims_go_out_in_batches_and_the_rest_next_run(tmp_path):
    clock = FakeClock()
    client = CountingEvents(clock, seconds=0.05)
    sink = EventBridgeTaskEvents("oncall", client=client)
    path = str(tmp_path / "state.json")
    tasks = tuple(
        TaskFate(f"t-{n:04d}", "app.tasks.render", "STARTED", T0 - 5, Verdict.LOST)
        for n in range(1000)
    )
    big = incident(1)
    big = replace(big, finding=replace(big.finding, tasks=tasks))
    # When a run with 3 s left sends them (0.05 s a call; 1 s kept back per call)
    first = _commit(path, sink, state_of(big), budget=3.0, clock=clock)
    sent = first.delivered.task_events
    # Then it stops inside its deadline, ten entries per call, and defers the rest
    assert clock.now - 100.0 <= 3.0
    assert 0 < sent.calls < 100 and len(sent.events) == 10 * sent.calls
    assert sent.failed == 1000 - len(sent.events)
    # When later runs have time
    for _ in range(5):  # bounded: 100 calls at most are needed
        _commit(path, sink, budget=30.0, clock=clock)
    # Then every task went out exactly once, with one key each
    assert len(client.keys) == 1000 == len(set(client.keys))
    assert client.calls == 100


def test_refused_entries_are_retried_with_the_same_keys(tmp_path):
    clock = FakeClock()
    client = CountingEvents(clock, seconds=0.0, fail_every=3)
    sink = EventBridgeTaskEvents("oncall", client=client)
    path = str(tmp_path / "state.json")
    _commit(path, sink, state_of(incident(1, tasks=7)), clock=clock)
    assert len(client.keys) == 4  # entries 0, 3, 6 were throttled
    client.fail_every = 0
    _commit(path, sink, clock=clock)
    assert len(client.keys) == 7 == len(set(client.keys))
