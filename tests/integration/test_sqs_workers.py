"""Real Celery workers on Amazon SQS (kombu's SQS transport against a moto server) with a real
Redis result backend: what a check sees without remote control, a worker killed mid-task with
its ECS stopped event in a moto log group, and a task killed on every receive until the queue's
redrive policy moves it to the dead-letter queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from oomcheck.config.settings import Settings
from oomcheck.demo import services
from oomcheck.demo.ecs import ecs_task_stopped_event, put_ecs_event
from oomcheck.demo.workers import WorkerProcess, wait_for
from oomcheck.model import Cause, Finding, Kind, Policy, Verdict
from oomcheck.ports import Deps
from oomcheck.report.document import Report
from oomcheck.runner import run_once
from oomcheck.wiring import build_deps
from tests.integration.conftest import CapturingPublisher

pytestmark = pytest.mark.integration

pytest.importorskip("pycurl", reason="the workers' SQS transport needs kombu[sqs] (pycurl)")

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
VISIBILITY_S = 4


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = services.start_moto()
    try:
        yield server.endpoint
    finally:
        server.stop()


@dataclass
class SqsFleet:
    """Workers of the demo app on one SQS queue of their own, and a checker wired to them."""

    backend: str
    tmp: Path
    queue: str
    policy: Policy
    workers: list[WorkerProcess] = field(default_factory=list)
    publisher: CapturingPublisher = field(default_factory=CapturingPublisher)
    _deps: Deps | None = None
    _client: Any = None
    _ips: int = 0
    # an address block of this fleet's own: evidence of another test's worker never matches
    subnet: int = field(default_factory=lambda: uuid.uuid4().int % 250)

    @property
    def group(self) -> str:
        return f"/ecs/{self.queue}"

    @property
    def sqs(self) -> Any:
        return boto3.client("sqs")

    @property
    def deps(self) -> Deps:
        if self._deps is None:
            settings = Settings(
                broker_url="sqs://",
                result_backend=self.backend,
                queues=(self.queue,),
                log_groups=(self.group,),
                state_file=str(self.tmp / "state.json"),
                policy=self.policy,
            )
            deps = build_deps(settings)
            deps.publisher = self.publisher
            self._deps = deps
        return self._deps

    def check(self, mode: str = "check") -> Report:
        return run_once(self.deps, mode)

    def start(self, *, pool: str = "prefork") -> tuple[WorkerProcess, str]:
        """A worker whose nodename carries an address of its own, as on ECS awsvpc."""
        self._ips += 1
        ip = f"10.{self.subnet}.0.{self._ips}"
        name = f"w{self._ips}@ip-{ip.replace('.', '-')}"
        worker = WorkerProcess(
            name,
            "sqs://",
            self.backend,
            pool=pool,
            log_path=str(self.tmp / f"{name}.log"),
            extra_env={
                "OOMCHECK_DEMO_QUEUE": self.queue,
                "OOMCHECK_DEMO_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
            },
        )
        self.workers.append(worker.start())
        return worker, ip

    def send(self, task: str, *args: object) -> str:
        if self._client is None:
            from celery import Celery

            self._client = Celery(
                "client",
                broker="sqs://",
                backend=self.backend,
                set_as_current=False,
            )
            self._client.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_S}
        return str(self._client.send_task(task, args=list(args), queue=self.queue).id)

    def record(self, task_id: str) -> dict[str, Any]:
        client = redis.Redis.from_url(self.backend)
        try:
            raw = client.get(f"celery-task-meta-{task_id}")
        finally:
            client.close()
        return json.loads(raw) if raw else {}

    def wait_state(self, task_id: str, state: str, *, worker: str | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            record = self.record(task_id)
            if record.get("status") != state:
                return None
            result = record.get("result")
            # STARTED records carry the hostname in their result; finished ones (with
            # result_extended) as "worker"
            host = result.get("hostname") if isinstance(result, dict) else record.get("worker")
            if worker is not None and host != worker:
                return None
            return record

        return wait_for(reached, 60.0, what=f"{task_id} {state}")

    def died(self, worker: WorkerProcess, ip: str) -> None:
        """SIGKILL the worker (its pool child too), as the kernel does in an OOM-killed
        container, and put the stopped event ECS sends into the log group."""
        worker.kill()
        worker.wait(10)
        logs = boto3.client("logs")
        event = ecs_task_stopped_event(
            cluster="celery-prod",
            task_id=uuid.uuid4().hex,
            private_ip=ip,
            container="worker",
            exit_code=137,
            reason=OOM_REASON,
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            at=time.time(),
        )
        put_ecs_event(logs, self.group, event)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._client is not None:
            self._client.close()


@pytest.fixture
def sqs_fleet(
    moto_endpoint: str,
    redis_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SqsFleet]:
    # kombu, boto3 and the worker subprocesses all take the endpoint from boto3's own variable
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    queue = f"q{uuid.uuid4().hex[:10]}"
    boto3.client("logs").create_log_group(logGroupName=f"/ecs/{queue}")
    fleet = SqsFleet(
        redis_db_url,
        tmp_path,
        queue,
        # as `oomcheck -A` reads them from the demo app
        Policy(
            task_acks_late={"demo.sleepy_late": True, "*": False},
            task_expectations={"demo.sleepy": 600.0},
        ),
    )
    try:
        yield fleet
    finally:
        fleet.stop()


def _dead_lettered(report: Report) -> list[Finding]:
    return [f for f in report.findings if f.tasks and f.tasks[0].verdict is Verdict.DEAD_LETTERED]


def _kinds(report: Report) -> list[str]:
    return sorted(f.kind.value for f in report.findings if f.alertable)


def _receive_count(sqs: Any, url: str) -> int:
    message = sqs.receive_message(
        QueueUrl=url, VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    return int(message["Attributes"]["ApproximateReceiveCount"])


def test_a_healthy_solo_worker_busy_within_its_limit_raises_nothing(sqs_fleet: SqsFleet) -> None:
    worker, _ = sqs_fleet.start(pool="solo")
    task = sqs_fleet.send("demo.sleepy", 30)
    sqs_fleet.wait_state(task, "STARTED", worker=worker.name)
    before = set(sqs_fleet.sqs.list_queues().get("QueueUrls", []))
    for _ in range(3):
        report = sqs_fleet.check()
    assert _kinds(report) == []
    # the worker as far as it is known: from its STARTED record
    (row,) = report.workers
    assert (row["name"], row["status"], row["active"]) == (worker.name, "busy", 1)
    assert row["known_from"] == "results: STARTED records"
    assert str(report.sources["inspect"].state) == "off"
    assert str(report.sources["sqs"].state) == "ok"
    assert sqs_fleet.publisher.messages == []
    # a check creates no queue (no pidbox reply queue for a broadcast nobody hears)
    after = set(sqs_fleet.sqs.list_queues().get("QueueUrls", []))
    assert after == before


def test_a_check_never_raises_a_waiting_messages_receive_count(sqs_fleet: SqsFleet) -> None:
    worker, _ = sqs_fleet.start(pool="solo")
    busy = sqs_fleet.send("demo.sleepy", 30)
    sqs_fleet.wait_state(busy, "STARTED", worker=worker.name)
    sqs_fleet.send("demo.sleepy", 1)  # waits behind the busy solo worker, never received
    url = sqs_fleet.sqs.get_queue_url(QueueName=sqs_fleet.queue)["QueueUrl"]
    worker.kill()  # nobody receives from here on
    worker.wait(10)

    def checked_while_waiting() -> bool:
        sqs_fleet.check()
        attributes = sqs_fleet.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        # the busy task's message comes back once its visibility timeout passes: two wait
        return attributes["ApproximateNumberOfMessages"] == "2"

    wait_for(checked_while_waiting, 30.0, interval=0.5, what="both messages visible")
    messages = sqs_fleet.sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )["Messages"]
    counts = sorted(int(m["Attributes"]["ApproximateReceiveCount"]) for m in messages)
    # this receive is the waiting message's first and the busy one's second, however many
    # checks ran meanwhile
    assert counts == [1, 2]


def test_early_ack_task_killed_mid_task_is_lost(sqs_fleet: SqsFleet) -> None:
    worker, ip = sqs_fleet.start()
    task = sqs_fleet.send("demo.sleepy", 60)
    sqs_fleet.wait_state(task, "STARTED", worker=worker.name)
    assert _kinds(sqs_fleet.check()) == []
    sqs_fleet.died(worker, ip)
    report = sqs_fleet.check()
    lost = next(f for f in report.findings if f.kind is Kind.WORKER_LOST)
    assert lost.worker == worker.name
    assert (lost.cause, lost.exit_code) == (Cause.OOM_KILLED, 137)
    assert [(t.id, t.verdict) for t in lost.tasks] == [(task, Verdict.LOST)]
    assert [(r["name"], r["status"]) for r in report.workers] == [(worker.name, "lost")]
    subjects = [m.subject for m in sqs_fleet.publisher.messages]
    assert any(worker.name in s and "OOM-killed" in s for s in subjects), subjects


def test_acks_late_task_awaits_redelivery_then_is_redelivered(sqs_fleet: SqsFleet) -> None:
    first, ip = sqs_fleet.start()
    task = sqs_fleet.send("demo.sleepy_late", 2)
    sqs_fleet.wait_state(task, "STARTED", worker=first.name)
    sqs_fleet.died(first, ip)
    report = sqs_fleet.check()
    (fate,) = next(f for f in report.findings if f.kind is Kind.WORKER_LOST).tasks
    assert fate.verdict is Verdict.AWAITING_REDELIVERY
    assert fate.redeliver_at is not None
    # a second worker receives the message once its visibility timeout passes
    second, _ = sqs_fleet.start()
    sqs_fleet.wait_state(task, "SUCCESS", worker=second.name)
    report = sqs_fleet.check()
    (fate,) = next(f for f in report.findings if f.kind is Kind.WORKER_LOST).tasks
    assert fate.verdict is Verdict.REDELIVERED
    actions = [m.action.value for m in sqs_fleet.publisher.messages]
    assert actions[:2] == ["open", "update"]


def test_a_task_killed_on_every_receive_is_found_in_the_dead_letter_queue(
    sqs_fleet: SqsFleet,
) -> None:
    sqs = sqs_fleet.sqs
    dlq = sqs.create_queue(QueueName=f"{sqs_fleet.queue}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # the queue as the team's infrastructure made it, before any worker declares it
    sqs.create_queue(
        QueueName=sqs_fleet.queue,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_S),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"}),
        },
    )
    task = sqs_fleet.send("demo.sleepy_late", 60)
    for _ in range(2):
        worker, ip = sqs_fleet.start()
        sqs_fleet.wait_state(task, "STARTED", worker=worker.name)
        sqs_fleet.died(worker, ip)
        sqs_fleet.check()
    # the next receive finds it over its limit: SQS moves it to the dead-letter queue
    sqs_fleet.start()

    def dead_lettered() -> Report | None:
        report = sqs_fleet.check()
        found = [
            f for f in report.findings if f.tasks and f.tasks[0].verdict.value == "dead_lettered"
        ]
        return report if found else None

    # bounded: 60 checks at most

    report = wait_for(dead_lettered, 60.0, interval=1.0, what="the dead-letter finding")
    (finding,) = [
        f for f in report.findings if f.tasks and f.tasks[0].verdict is Verdict.DEAD_LETTERED
    ]
    assert finding.kind is Kind.POISON_TASK  # its kills were seen
    assert finding.tasks[0].id == task
    assert "its runs killed 2 worker process(es)" in finding.summary
    assert "demo.sleepy_late" in finding.summary


def test_the_ecs_services_running_tasks_are_listed_beside_the_started_records(
    sqs_fleet: SqsFleet,
) -> None:
    # Given a busy worker on SQS whose ECS task has its address, and an idle ECS task of the
    # same service that no STARTED record names (an ECS API stand-in answers as AWS does)
    from oomcheck.sources.ecs import EcsTasks
    from tests.unit.test_ecs_source import FakeEcs, fargate_task

    worker, ip = sqs_fleet.start(pool="solo")
    busy = "0a" * 16
    idle = "0b" * 16
    arn = "arn:aws:ecs:eu-west-1:123456789012:task/celery-prod/{}"
    sqs_fleet.deps.ecs = EcsTasks(
        FakeEcs(
            [
                fargate_task(arn.format(busy), ip),
                fargate_task(arn.format(idle), f"10.{sqs_fleet.subnet}.9.9"),
            ]
        ),
        (("celery-prod", "celery-worker"),),
    )
    task = sqs_fleet.send("demo.sleepy", 30)
    sqs_fleet.wait_state(task, "STARTED", worker=worker.name)
    # When a check runs
    report = sqs_fleet.check()
    # Then the worker is one row known from both sources, and the idle task a row of its own
    rows = {row["name"]: row for row in report.workers}
    assert sorted(rows) == sorted([worker.name, f"ecs:celery-prod/celery-worker/{idle}"])
    assert rows[worker.name]["known_from"] == (
        f"results: STARTED records, ecs: task {busy} of celery-prod/celery-worker"
    )
    assert rows[worker.name]["addresses"] == [ip]
    assert (rows[worker.name]["status"], rows[worker.name]["active"]) == ("busy", 1)
    idle_row = rows[f"ecs:celery-prod/celery-worker/{idle}"]
    assert (idle_row["status"], idle_row["active"]) == ("alive", 0)
    assert idle_row["addresses"] == [f"10.{sqs_fleet.subnet}.9.9"]
    assert str(report.sources["ecs"].state) == "ok"
    assert _kinds(report) == []
