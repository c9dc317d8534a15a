"""Task events at scale: a worker death with 1,000 victim tasks, one EventBridge event each.

On a moto server (real HTTP, botocore's own client and retries), an incident with N victims is
delivered by the run's write half (oomcheck.alerting.delivery.commit) with a state file:
- with the function's default deadline (30 s less the handler's margin): PutEvents calls, entries
  per call and wall time, next to the reference measured in the same run: the same N events sent
  one per call (as the per-alert publisher would);
- with a deadline too short for them all: how many the first run sends, and that the next runs
  send the rest with the same keys (every key exactly once, read back from the bus's rule).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3

from bench.common import Result, moto_server, progress
from oomcheck.alerting import delivery
from oomcheck.alerting.outbox import SentJournal
from oomcheck.alerting.taskevents import DETAIL_TYPE, EventBridgeTaskEvents, due, entry
from oomcheck.deadline import Deadline
from oomcheck.model import (
    Action,
    Cause,
    Finding,
    Incident,
    IncidentKey,
    Kind,
    PendingAlert,
    Severity,
    State,
    TaskFate,
    Verdict,
)
from oomcheck.store.file import FileStateStore

DEADLINE_S = 29.0  # template.yaml's FunctionTimeout (30 s) less the handler's margin
T0 = 1_790_000_000.0


class Quiet:
    """The alert's own channel, out of the measurement (the task events are what is timed)."""

    def describe(self) -> str:
        return "quiet"

    def publish(self, message: Any) -> str:
        return "ok"


def _incident(n: int) -> Incident:
    worker = "celery@batch-7"
    tasks = tuple(
        TaskFate(
            f"{uuid.UUID(int=i)}",
            "billing.tasks.render_invoice",
            "STARTED",
            T0 - 30,
            Verdict.AWAITING_REDELIVERY if i % 4 == 0 else Verdict.LOST,
            redeliver_at=T0 + 3600 if i % 4 == 0 else None,
        )
        for i in range(n)
    )
    finding = Finding(
        Kind.WORKER_LOST,
        Severity.CRITICAL,
        worker,
        Cause.OOM_KILLED,
        137,
        tasks=tasks,
        first_seen=T0,
        incident_id="inc-bench",
        key=IncidentKey(Kind.WORKER_LOST, f"{worker}:1"),
    )
    return Incident(
        "inc-bench",
        finding.key or IncidentKey(Kind.WORKER_LOST, worker),
        Kind.WORKER_LOST,
        T0,
        finding,
        pending=(PendingAlert(Action.OPEN, T0),),
    )


def _commit(path: Path, sink: Any, state: State | None, budget_s: float) -> delivery.Delivered:
    store = FileStateStore(str(path))
    store.acquire("bench", T0, 60)
    loaded = store.load()
    box = delivery.Outbox(
        publisher=Quiet(),
        store=store,
        owner="bench",
        retention_s=86400,
        deadline=Deadline.after(budget_s),
        publish_s=1.0,  # kept back per call: a worst case of one PutEvents, as the wiring sizes
        finish_s=1.0,
        journal=SentJournal(),
        task_events=sink,
    )
    try:
        return delivery.commit(box, loaded, state or loaded, T0).delivered
    finally:
        store.abandon("bench")


def _rule_queue(events: Any, sqs: Any, bus: str) -> str:
    url = sqs.create_queue(QueueName=bus)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=bus,
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["oomcheck"], "detail-type": [DETAIL_TYPE]}),
    )
    events.put_targets(Rule=bus, EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return str(url)


def _keys(sqs: Any, url: str, limit: int) -> list[str]:
    keys: list[str] = []
    for _ in range(limit // 10 + 50):  # bounded
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        keys += [json.loads(m["Body"])["detail"]["dedup_key"] for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return keys


def _one_per_call(events: Any, bus: str, state: State) -> tuple[int, float]:
    todo = due(state)
    t0 = time.perf_counter()
    for event in todo:
        events.put_events(Entries=[entry(event, bus)])
    return len(todo), time.perf_counter() - t0


def run(quick: bool = False) -> Result:
    n = 200 if quick else 1000
    result = Result("oncall", tag="O")
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        events = boto3.client("events", endpoint_url=endpoint, region_name="us-east-1")
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        state = State(incidents={"inc-bench": _incident(n)})

        # 1. the whole burst within the function's deadline
        bus = f"bench-{uuid.uuid4().hex[:8]}"
        events.create_event_bus(Name=bus)
        sink = EventBridgeTaskEvents(bus, client=events)
        progress(f"oncall: {n} task events in batches, deadline {DEADLINE_S:.0f} s")
        t0 = time.perf_counter()
        done = _commit(Path(tmp) / "a.json", sink, state, DEADLINE_S)
        batched_s = time.perf_counter() - t0
        sent = done.task_events
        assert sent is not None
        ref_bus = f"ref-{uuid.uuid4().hex[:8]}"
        events.create_event_bus(Name=ref_bus)
        progress(f"oncall: reference, the same {n} events one per PutEvents call")
        ref_calls, ref_s = _one_per_call(events, ref_bus, state)
        result.add(
            f"{n} victim tasks: PutEvents calls (10 entries each)",
            f"{sent.calls} calls, {len(sent.events)} sent, {sent.failed} deferred",
            f"one per call: {ref_calls} calls",
            f"<= {-(-n // 10)} calls",
            sent.calls <= -(-n // 10) and len(sent.events) == n,
        )
        result.add(
            f"{n} victim tasks: time to send (incl. saving the marks)",
            f"{batched_s:.2f} s",
            f"one per call: {ref_s:.2f} s",
            f"< {DEADLINE_S:.0f} s deadline",
            batched_s < DEADLINE_S,
        )

        # 2. a deadline too short: the rest goes next run, every key once
        bus2 = f"short-{uuid.uuid4().hex[:8]}"
        events.create_event_bus(Name=bus2)
        url = _rule_queue(events, sqs, bus2)
        sink2 = EventBridgeTaskEvents(bus2, client=events)
        path = Path(tmp) / "b.json"
        budget = 2.0 + batched_s / 4  # room for about a quarter of them
        first = _commit(path, sink2, replace(state), budget)
        first_sent = len(first.task_events.events) if first.task_events else 0
        runs = 1
        for _ in range(20):  # bounded: each later run sends what its deadline allows
            if not due(FileStateStore(str(path)).load()):
                break
            _commit(path, sink2, None, DEADLINE_S)
            runs += 1
        keys = _keys(sqs, url, n)
        result.add(
            f"{n} victims, first run's deadline {budget:.1f} s: sent, then the rest",
            f"{first_sent} in run 1, all in {runs} runs; {len(keys)} received, "
            f"{len(set(keys))} distinct keys",
            "every task once",
            f"{n} received, {n} keys",
            len(keys) == n == len(set(keys)),
        )
        result.facts["task_events_calls"] = sent.calls
        result.facts["task_events_s"] = batched_s
    return result
