"""Queue backlogs read from real brokers, with messages published by kombu itself (so the keys are
the ones kombu writes: priority sub-lists, global_keyprefix), and active_queues() from a real
worker feeding Observation.queues."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from oomcheck.demo import services
from oomcheck.model import QueueDepth, SourceState, SourceStatus, State
from oomcheck.observe import observe
from oomcheck.sources.queues import AmqpQueueDepths, RedisQueueDepths
from tests.integration.conftest import Fleet


def publish(broker: str, queue: str, priorities: list[int], options: dict[str, Any]) -> None:
    app = Celery("publisher", broker=broker, set_as_current=False)
    app.conf.broker_transport_options = options
    try:
        for priority in priorities:
            app.send_task("app.nothing", queue=queue, priority=priority)
    finally:
        app.close()


@pytest.mark.parametrize("prefix", ["", "tenant-a:"])
def test_redis_depth_counts_every_priority_list_under_the_prefix(
    broker_db_url: str, prefix: str
) -> None:
    # Given: messages of priorities 0..9 published by kombu, and a queue nobody wrote to
    options = {"global_keyprefix": prefix} if prefix else {}
    publish(broker_db_url, "reports", [0, 0, 3, 5, 9, 9, 9], options)
    publish(broker_db_url, "mail", [0], options)
    client = redis.Redis.from_url(broker_db_url)
    try:
        keys = sorted(k.decode() for k in client.keys("*") if not k.startswith(b"_kombu"))
        assert f"{prefix}reports\x06\x169" in keys  # the layout we read is kombu's
        reader = RedisQueueDepths(client, keyprefix=prefix, transport_options=options)
        # When
        read = reader.depths(["reports", "mail", "empty", "reports"])
    finally:
        client.close()
    # Then: one round trip, each queue once, its sub-lists summed
    assert read.round_trips == 1
    assert read.depths == (
        QueueDepth("empty", 0),
        QueueDepth("mail", 1),
        QueueDepth("reports", 7),
    )
    assert all(d.consumers is None and d.oldest_at is None for d in read.depths)


def test_redis_depth_with_custom_priority_steps_and_a_cap(broker_db_url: str) -> None:
    options = {"priority_steps": list(range(10))}
    publish(broker_db_url, "q1", [0, 1, 2, 7], options)
    client = redis.Redis.from_url(broker_db_url)
    try:
        reader = RedisQueueDepths(client, transport_options=options, max_queues=2)
        read = reader.depths(["q1", "q2", "q3"])
    finally:
        client.close()
    assert [d.name for d in read.depths] == ["q1", "q2"]
    assert read.depths[0].messages == 4
    assert read.dropped == 1


@pytest.fixture
def amqp_url() -> Iterator[str]:
    url = services.rabbitmq_url()
    if url is None:
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672")
    yield url


@pytest.mark.rabbitmq
def test_rabbitmq_depth_and_consumers_by_passive_declare(amqp_url: str) -> None:
    from kombu import Connection, Queue

    name = f"oomcheck-depth-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url) as connection:
        channel = connection.channel()
        Queue(name, channel=channel, auto_delete=False).declare()
        try:
            publish(amqp_url, name, [0, 0, 0], {})
            deadline = time.monotonic() + 5
            while True:  # publishes are async to the broker: bounded wait for the count
                read = AmqpQueueDepths(amqp_url).depths([f"missing-{name}", name, "bad\x00"])
                if (read.depths and read.depths[0].messages == 3) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            channel.queue_delete(name)
    assert read.depths == (QueueDepth(name, 3, 0),)
    # the missing queue's 404 did not end the read; a name that is not a name is never sent
    assert read.absent == (f"missing-{name}",)
    assert read.round_trips == 2


def test_active_queues_of_a_real_worker_feed_the_observation(fleet: Fleet) -> None:
    # Given: a worker on the default queue, and a backlog on a queue only the settings name
    fleet.start("celery@queues-1", pool="solo")
    publish(fleet.broker, "nightly", [0, 0], {})
    deps = fleet.deps
    deps.settings = fleet.settings().with_overrides(queues=("nightly",))
    # When
    observed = observe(deps, State(), time.time(), audit=False)
    # Then
    workers = observed.observation.workers
    assert workers is not None
    snapshot = workers["celery@queues-1"]
    assert snapshot.queues == ("celery",)
    assert observed.observation.queues == (QueueDepth("celery", 0), QueueDepth("nightly", 2))
    assert observed.statuses["queues"] == SourceStatus(SourceState.OK)
    assert observed.stats["queue_depths"] == 2
