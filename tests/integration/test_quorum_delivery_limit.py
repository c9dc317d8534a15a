"""A task that kills its worker process on every delivery, on a real RabbitMQ quorum queue with
x-delivery-limit 2 (acks_late + reject_on_worker_lost): RabbitMQ delivers it 3 times, then
dead-letters it to the queue's dead-letter exchange, or drops it without one. The poison_task
finding says which, from the queue's arguments as the app declares them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest

from oomcheck.demo import services
from oomcheck.model import Kind, Policy, QuorumLimit, Verdict
from tests.integration.conftest import Fleet, _vhost, poll_checks

pytestmark = pytest.mark.rabbitmq

LIMIT = 2
# each run lives this long before its process is killed, as a task whose memory grows would: a
# check every 0.5 s sees each run (a run killed at once is replaced before a check sees it)
HOLD_S = 3.0


@pytest.fixture
def broker() -> Iterator[str]:
    url = services.rabbitmq_url()
    if url is None:
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672")
    with _vhost() as vhost:
        if not vhost:
            pytest.skip("rabbitmqctl cannot make a vhost of this test's own")
        yield url[: url.index("/", len("amqp://"))] + "/" + vhost


def _run_loop(
    broker: str, backend: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, *, dlx: bool
) -> tuple[Any, kombu.Connection, str]:
    """A quorum queue of its own, a worker on it, the loop started; returns the poison finding,
    a connection to look at the queues, and the queue's name."""
    queue = f"oomcheck-quorum-{uuid.uuid4().hex[:8]}"
    arguments: dict[str, Any] = {"x-queue-type": "quorum", "x-delivery-limit": LIMIT}
    connection = kombu.Connection(broker)
    if dlx:
        arguments |= {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}
        channel = connection.default_channel
        channel.exchange_declare("dlx", "direct", durable=True)
        channel.queue_declare("dead", durable=True)
        channel.queue_bind("dead", "dlx", "dead")
    monkeypatch.setenv("OOMCHECK_DEMO_QUEUE_ARGUMENTS", json.dumps(arguments))
    limit = QuorumLimit(LIMIT, "dlx" if dlx else None, "dead" if dlx else None)
    fleet = Fleet(
        broker=broker,
        backend=backend,
        tmp=tmp,
        queue=queue,
        overrides={
            "policy": Policy(quorum_queues={queue: limit}, task_queues={"*": queue}),
        },
    )
    try:
        fleet.start("quorum@oomcheck-test")
        fleet.check()
        from celery import Celery

        # a client with the worker's queue arguments: a send declares the queue as the worker did
        client = Celery("client", broker=broker, backend=backend, set_as_current=False)
        client.conf.task_queues = [kombu.Queue(queue, routing_key=queue, queue_arguments=arguments)]
        task_id = str(client.send_task("demo.die_late", args=[HOLD_S], queue=queue).id)
        client.close()
        report = poll_checks(
            fleet,
            lambda r: any(
                f.kind == Kind.POISON_TASK
                and f.tasks[0].verdict in (Verdict.DEAD_LETTERED, Verdict.LOST)
                for f in r.findings
            ),
            timeout=60,
            interval=0.5,
        )
    finally:
        fleet.stop()
    [poison] = [f for f in report.findings if f.kind == Kind.POISON_TASK]
    assert poison.tasks[0].id == task_id
    return poison, connection, queue


def test_over_the_delivery_limit_the_message_is_dead_lettered(
    broker: str, redis_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    poison, connection, queue = _run_loop(broker, redis_db_url, tmp_path, monkeypatch, dlx=True)
    with connection:
        # Then the verdict says where it went, and RabbitMQ shows the message there
        assert poison.tasks[0].verdict is Verdict.DEAD_LETTERED
        assert poison.tasks[0].waits_in == "dead-letter exchange 'dlx' (routing key 'dead')"
        channel = connection.default_channel
        assert channel.queue_declare(queue, passive=True).message_count == 0
        message = channel.basic_get("dead", no_ack=True)
        assert message is not None, "RabbitMQ did not dead-letter the message"
        headers = message.headers
        assert headers["id"] == poison.tasks[0].id
        assert headers["x-first-death-reason"] == "delivery_limit"


def test_over_the_delivery_limit_without_a_dead_letter_exchange_it_is_dropped(
    broker: str, redis_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    poison, connection, queue = _run_loop(broker, redis_db_url, tmp_path, monkeypatch, dlx=False)
    with connection:
        assert poison.tasks[0].verdict is Verdict.LOST
        assert poison.summary.endswith("dropped by the delivery limit")
        assert connection.default_channel.queue_declare(queue, passive=True).message_count == 0
