"""Fault injection: SNS and DynamoDB (a moto server) behind a proxy that refuses, fails,
throttles, hangs or loses the reply. Every run must end inside the function's timeout with its
report, and every alert must arrive once (a lost reply to an accepted publish may repeat it, with
the same dedup key).

The checker sees fake Celery workers (the fakes of tests/unit/test_runner.py): the faults under
test are AWS's, and the alerts are read back from SNS through a subscribed SQS queue.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from oomcheck import aws
from oomcheck.alerting import delivery
from oomcheck.alerting.outbox import SentJournal
from oomcheck.alerting.sns import SnsAlerter
from oomcheck.deadline import Deadline
from oomcheck.model import SourceState, SourceStatus, StartedTask
from oomcheck.ports import Deps
from oomcheck.provision import subscribe_queue
from oomcheck.report.document import Report
from oomcheck.runner import run_once
from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition
from tests.awsfaults import FaultProxy, serial_moto
from tests.unit.incidents import T0, incident, state_of
from tests.unit.test_runner import Clock, FakeControl, FakeResults, FlakyPublisher, W, _deps

pytestmark = pytest.mark.integration

FUNCTION_TIMEOUT_S = 30.0  # template.yaml's default FunctionTimeout
HANDLER_MARGIN_S = 1.0  # what functions/checker/app.py keeps back for metrics and the return
# A budget whose DynamoDB client limits (5 s read timeout) outlast moto's slowest answers here
MOTO_PATIENT_BUDGET_S = 200.0


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with serial_moto() as endpoint:
        yield endpoint


@dataclass
class Aws:
    endpoint: str
    sns: FaultProxy
    ddb: FaultProxy
    table: str
    topic: str
    queue: str
    sqs: Any
    dynamodb: Any  # straight to the server, to look at the table

    def store(self, budget_s: float = FUNCTION_TIMEOUT_S) -> DynamoDBStateStore:
        client = boto3.client(
            "dynamodb",
            endpoint_url=self.ddb.url,
            region_name="us-east-1",
            config=aws.store_limits(budget_s).config(),
        )
        return DynamoDBStateStore(self.table, client=client)

    def publisher(self, budget_s: float = FUNCTION_TIMEOUT_S) -> SnsAlerter:
        client = boto3.client(
            "sns",
            endpoint_url=self.sns.url,
            region_name="us-east-1",
            config=aws.publish_limits(budget_s).config(),
        )
        return SnsAlerter(self.topic, client=client)

    def received(self) -> list[dict[str, Any]]:
        """Every alert delivered to the queue so far (bounded: at most 60 receives)."""
        out: list[dict[str, Any]] = []
        empty = 0
        for _ in range(60):
            reply = self.sqs.receive_message(
                QueueUrl=self.queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = reply.get("Messages", [])
            if not messages:
                empty += 1
                if empty == 2:
                    break
                continue
            for message in messages:
                envelope = json.loads(message["Body"])
                out.append(json.loads(envelope["Message"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
        return out


@pytest.fixture
def env(moto: str) -> Iterator[Aws]:
    sns_proxy, ddb_proxy = FaultProxy(moto).start(), FaultProxy(moto).start()
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1")
    sns = boto3.client("sns", endpoint_url=moto, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto, region_name="us-east-1")
    name = f"oomcheck-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(**table_definition(name))
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = subscribe_queue(sns, sqs, topic, name)
    try:
        yield Aws(moto, sns_proxy, ddb_proxy, name, topic, queue, sqs, dynamodb)
    finally:
        sns_proxy.stop()
        ddb_proxy.stop()


@dataclass
class Checker:
    """A deployed checker's container: its deps, and its clock."""

    deps: Deps
    control: FakeControl
    clock: Clock

    def check(self, budget_s: float = FUNCTION_TIMEOUT_S) -> tuple[Report, float]:
        """One invocation; returns the report and how long it took (s)."""
        started = time.monotonic()
        report = run_once(self.deps, "check", Deadline.after(budget_s - HANDLER_MARGIN_S))
        return report, time.monotonic() - started


def _checker(
    tmp_path: Any, env: Aws, workers: int = 1, budget_s: float = FUNCTION_TIMEOUT_S
) -> Checker:
    control, results, clock = FakeControl(), FakeResults(), Clock()
    for i in range(workers):
        # each worker runs one task (acked at start), with its STARTED record
        name, pid = (W if i == 0 else f"celery@w{i + 1}"), 10 + i * 10
        task = {"id": f"t{i}", "name": "app.work", "worker_pid": pid + 1, "time_start": 1.0}
        control.add(name, pid, [{**task, "acknowledged": True}])
        results.started.append(StartedTask(f"t{i}", name, pid + 1, "app.work", clock.now - 5))
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    deps.store = env.store(budget_s)
    deps.publisher = env.publisher(budget_s)
    deps.store_s = aws.store_limits(budget_s).worst_s
    deps.publish_s = aws.publish_limits(budget_s).worst_s
    return Checker(deps, control, clock)


def _kill_all(checker: Checker) -> None:
    checker.control.alive.clear()
    checker.clock.now += 60


def _healthy_then_dead(tmp_path: Any, env: Aws, workers: int = 1) -> Checker:
    checker = _checker(tmp_path, env, workers)
    report, _ = checker.check()
    assert report.sources["state"] == SourceStatus(SourceState.OK) and report.exit_code == 0
    _kill_all(checker)
    return checker


def _within_timeout(seconds: float) -> None:
    assert seconds < FUNCTION_TIMEOUT_S - HANDLER_MARGIN_S, f"took {seconds:.1f} s"


SNS_FAULTS = ["refuse", "500", "throttle", pytest.param("hang", marks=pytest.mark.slow)]
DDB_FAULTS = ["refuse", "500", "throttle", pytest.param("hang", marks=pytest.mark.slow)]


@pytest.mark.parametrize("fault", SNS_FAULTS)
def test_sns_fault_keeps_the_alert_and_it_arrives_once_after_recovery(tmp_path, env, fault):
    # Given a worker that died, and SNS failing
    checker = _healthy_then_dead(tmp_path, env)
    env.sns.mode = fault
    # When a check runs
    report, took = checker.check()
    # Then it ends in time with its report, the alert kept, the lease given back
    _within_timeout(took)
    print(f"SNS {fault}: run took {took:.2f} s")
    assert [(a.kind, a.published) for a in report.alerts] == [("worker_lost", False)]
    assert report.sources["alerts"].failed and report.sources["state"] == SourceStatus(
        SourceState.OK
    )
    # And once SNS is back the alert goes out, once
    env.sns.mode = "pass"
    checker.clock.now += 60
    report, _ = checker.check()
    assert report.sources["state"] == SourceStatus(SourceState.OK)
    assert [(a.kind, a.published) for a in report.alerts] == [("worker_lost", True)]
    checker.clock.now += 60
    assert checker.check()[0].alerts == ()
    [alert] = env.received()
    assert alert["kind"] == "worker_lost" and alert["dedup_key"].endswith(":open:0")


@pytest.mark.parametrize("fault", DDB_FAULTS)
def test_dynamodb_fault_ends_in_time_with_a_report_and_no_double_alert(tmp_path, env, fault):
    checker = _healthy_then_dead(tmp_path, env)
    env.ddb.mode = fault
    report, took = checker.check()
    _within_timeout(took)
    print(f"DynamoDB {fault}: run took {took:.2f} s")
    # a report of what it saw; without state no alert goes out (every run would repeat it)
    assert report.sources["state"].failed and report.sources["inspect"] == SourceStatus(
        SourceState.OK
    )
    assert report.alerts == () and report.to_json()["workers"] == []
    env.ddb.mode = "pass"
    checker.clock.now += 60
    report, _ = checker.check()
    assert report.sources["state"] == SourceStatus(SourceState.OK)
    assert [(a.kind, a.published) for a in report.alerts] == [("worker_lost", True)]
    checker.clock.now += 60
    assert checker.check()[0].alerts == ()
    assert len(env.received()) == 1


def test_dynamodb_failing_right_after_a_publish_sends_no_second_alert(tmp_path, env):
    # Given DynamoDB starts throttling the moment SNS accepts the alert
    checker = _healthy_then_dead(tmp_path, env)

    def break_dynamodb() -> None:
        env.ddb.mode = "throttle"

    env.sns.on_forward = break_dynamodb
    report, took = checker.check()
    _within_timeout(took)
    print(f"DynamoDB throttled after the publish: run took {took:.2f} s")
    assert [(a.kind, a.published) for a in report.alerts] == [("worker_lost", True)]
    assert report.sources["state"].failed
    # the lease it could not give back outlives the run by seconds, not 90
    lease = env.dynamodb.get_item(
        TableName=env.table, Key={"pk": {"S": "default"}, "sk": {"S": "lease"}}
    )["Item"]
    assert float(lease["lease_until"]["N"]) <= checker.clock.now + FUNCTION_TIMEOUT_S + 5
    # When DynamoDB is back, the next runs of this container neither wait nor send it again
    env.sns.on_forward = None
    env.ddb.mode = "pass"
    for _ in range(2):
        checker.clock.now += 60
        report, _ = checker.check()
        assert report.sources["state"] == SourceStatus(SourceState.OK) and report.alerts == ()
    assert len(env.received()) == 1


def test_a_lost_publish_reply_repeats_with_the_same_dedup_key(tmp_path, env):
    # Given SNS accepts the message but the reply never reaches the checker
    checker = _healthy_then_dead(tmp_path, env)
    env.sns.mode = "lose_response"
    report, took = checker.check()
    _within_timeout(took)
    assert [a.published for a in report.alerts] == [False]
    env.sns.mode = "pass"
    checker.clock.now += 60
    assert [a.published for a in checker.check()[0].alerts] == [True]
    # Then the copies (one per attempt: at most 2 in the failed run, 1 after) share one key
    received = env.received()
    assert 2 <= len(received) <= 3
    assert len({r["dedup_key"] for r in received}) == 1


def test_120_workers_dying_at_once_is_one_message(tmp_path, env):
    checker = _checker(tmp_path, env, workers=120)
    # moto on a loaded machine takes seconds over a 120-item transaction that DynamoDB answers
    # in milliseconds: this test is about grouping, so the store's client may wait for moto
    checker.deps.store = env.store(MOTO_PATIENT_BUDGET_S)
    report, _ = checker.check()
    assert report.sources["state"] == SourceStatus(SourceState.OK) and report.exit_code == 0
    _kill_all(checker)
    env.sns.mode = "delay"  # 0.25 s per publish
    report, took = checker.check()
    _within_timeout(took)
    lost = [a for a in report.alerts if a.kind == "worker_lost"]
    assert len(lost) == 120 and all(a.published for a in lost)
    assert report.stats["messages_published"] == 1
    [alert] = env.received()
    assert len(alert["incident_ids"]) == 120
    assert alert["subject"].startswith("[oomcheck] CRITICAL: 120 workers died")
    print(f"120 workers dying at once: 1 message, run took {took:.2f} s")


@pytest.mark.slow
def test_120_separate_alerts_with_slow_sns_each_arrive_once_over_runs(tmp_path, env):
    # Given 120 incidents that cannot share a message (opened in different runs), SNS taking
    # 0.25 s per publish, and runs of 16 s (so delivering them all takes several runs). The
    # publish read timeout is budget/15: at 8 s runs it was 0.53 s, and on a loaded machine
    # (make test runs the suite in parallel) a 0.25 s delay plus moto's own time passed it, so
    # botocore's retry re-sent a publish that had gone through: a repeat this test does not inject.
    budget = 16.0
    store = env.store(budget)
    store.acquire("seed", T0, 60)
    apart = state_of(*(incident(i, opened_at=T0 + i) for i in range(120)))
    store.save("seed", state_of(), apart, 86400)
    store.release("seed", apart)
    env.sns.mode = "delay"
    publisher = env.publisher(budget)
    journal = SentJournal()
    runs, durations = 0, []
    while runs < 40:
        # When runs deliver, each inside its deadline
        started = time.monotonic()
        deadline = Deadline.after(budget - HANDLER_MARGIN_S)
        store.acquire("checker", T0, budget + 5)
        loaded = store.load()
        box = delivery.Outbox(
            publisher=publisher,
            store=store,
            owner="checker",
            retention_s=86400,
            deadline=deadline,
            publish_s=aws.publish_limits(budget).worst_s,
            finish_s=aws.store_limits(budget).worst_s,
            journal=journal,
        )
        out = delivery.commit(box, loaded, journal.apply(loaded), T0)
        durations.append(time.monotonic() - started)
        runs += 1
        assert out.status == SourceStatus(SourceState.OK)
        if not any(i.pending for i in out.delivered.state.incidents.values()):
            break
    # Then each incident arrived exactly once, and no run overran
    received = env.received()
    assert sorted(r["incident_id"] for r in received) == [f"inc-{i:04d}" for i in range(120)]
    assert max(durations) < budget
    print(
        f"120 separate alerts, 0.25 s per publish, {budget:.0f} s runs: {runs} runs, "
        f"{len(received)} messages, longest run {max(durations):.2f} s"
    )
