"""Build the real adapters from Settings, once per process (a Lambda container, a CLI call)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from oomcheck.alerts import PrintAlerter, Publisher, SnsAlerter
from oomcheck.runner import Deps
from oomcheck.settings import Settings
from oomcheck.sources.inspector import CeleryInspector
from oomcheck.state import DynamoDBStateStore, FileStateStore, StateStore


def build_deps(settings: Settings, write: Callable[[str], object] | None = None) -> Deps:
    store: StateStore = (
        DynamoDBStateStore(settings.table, settings.target)
        if settings.table
        else FileStateStore(settings.state_file)
    )
    publisher: Publisher = (
        SnsAlerter(settings.topic_arn)
        if settings.topic_arn
        else PrintAlerter(write or sys.stderr.write)
    )
    deps = Deps(settings=settings, store=store, publisher=publisher)
    deps.inspector = CeleryInspector(
        settings.broker_url,
        keyprefix=settings.broker_keyprefix,
        transport_options=settings.broker_transport_options,
        timeout=settings.inspect_timeout_s,
        reping_timeout=settings.reping_timeout_s,
    )
    if settings.result_backend is None:
        deps.off["results"] = "no result backend configured (OOMCHECK_RESULT_BACKEND)"
    elif not settings.backend_is_redis:
        deps.off["results"] = "only Redis result backends can be scanned"
    else:
        from oomcheck.sources.redis_client import RedisClock, make_redis
        from oomcheck.sources.results import RedisResultScanner

        backend = make_redis(
            settings.result_backend, transport_options=settings.result_transport_options
        )
        deps.reference_clock = RedisClock(backend, "result backend")
        deps.results = RedisResultScanner(
            backend,
            keyprefix=settings.result_keyprefix,
            result_expires=settings.result_expires_s,
            failure_expires=settings.result_failure_expires_s,
        )
    if settings.broker_transport == "redis":
        from oomcheck.sources.broker import RedisBrokerScanner
        from oomcheck.sources.redis_client import RedisClock, make_redis

        broker = make_redis(
            settings.broker_url, transport_options=settings.broker_transport_options
        )
        from oomcheck.sources.queues import RedisQueueDepths

        # the broker's clock first: the workers talk to it on every fetch
        deps.reference_clock = RedisClock(broker, "broker")
        deps.broker = RedisBrokerScanner(broker, keyprefix=settings.broker_keyprefix)
        # Deps.queues is one line for runner.Deps at the merge with the alerts/runner branch;
        # observe reads it defensively until then.
        deps.queues = RedisQueueDepths(  # type: ignore[attr-defined]
            broker,
            keyprefix=settings.broker_keyprefix,
            transport_options=settings.broker_transport_options,
        )
    else:
        deps.off["broker"] = (
            "RabbitMQ requeues unacked messages itself when a consumer dies"
            if settings.broker_transport == "amqp"
            else "unacked messages are read from Redis brokers only"
        )
    if settings.broker_transport == "amqp":
        from oomcheck.sources.queues import AmqpQueueDepths

        deps.queues = AmqpQueueDepths(  # type: ignore[attr-defined]
            settings.broker_url, transport_options=settings.broker_transport_options
        )
    elif settings.broker_transport != "redis":
        deps.off["queues"] = "queue depths are read from Redis and RabbitMQ brokers only"
    if settings.log_groups:
        from oomcheck.aws import client
        from oomcheck.sources.exits import CloudWatchExitEvents

        deps.exits = CloudWatchExitEvents(
            client("logs"), settings.log_groups, containers=settings.containers
        )
    else:
        deps.off["exits"] = "no log groups configured (OOMCHECK_LOG_GROUPS)"
    return deps
