"""Build the real adapters from Settings, once per process (a Lambda container, a CLI call)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oomcheck.alerting.channels import FanoutPublisher
from oomcheck.alerting.sns import ChatAlerter, PrintAlerter, SnsAlerter
from oomcheck.aws import CallLimits
from oomcheck.config.settings import Settings
from oomcheck.config.urls import for_kombu
from oomcheck.deadline import DEFAULT_RUN_TIMEOUT_S
from oomcheck.ports import BrokerPresence, Deps, Publisher, StateStore
from oomcheck.silences.store import silence_store
from oomcheck.sources.inspector import CeleryInspector
from oomcheck.store.dynamodb import DynamoDBStateStore
from oomcheck.store.file import FileStateStore

if TYPE_CHECKING:
    from oomcheck.sources.presence.management import RabbitManagementApi


def build_deps(
    settings: Settings,
    write: Callable[[str], object] | None = None,
    budget_s: float = DEFAULT_RUN_TIMEOUT_S,
) -> Deps:
    """``budget_s``: the time one run may take (the Lambda's timeout, the CLI's --timeout);
    every AWS client's timeouts and retries are sized from it."""
    from oomcheck import aws

    store_limits = aws.store_limits(budget_s)
    publish_limits = aws.publish_limits(budget_s)
    store: StateStore = (
        DynamoDBStateStore(
            settings.table, settings.target, client=aws.client("dynamodb", limits=store_limits)
        )
        if settings.table
        else FileStateStore(settings.state_file)
    )
    channels = _channels(settings, write, publish_limits)
    publisher: Publisher = channels[0] if len(channels) == 1 else FanoutPublisher(channels)
    deps = Deps(settings=settings, store=store, publisher=publisher)
    _oncall(deps, publish_limits)
    if settings.table:
        deps.store_s = store_limits.worst_s
    remote = [c for c in channels if not isinstance(c, PrintAlerter)]
    # channels are published one after the other: one alert's worst case is their sum
    deps.publish_s = publish_limits.worst_s * len(remote)
    if settings.broker_transport == "sqs":
        _sqs_sources(deps, settings, budget_s)
        _results(deps, settings)
        _exits(deps, settings, budget_s)
        _wire_beat(deps, settings)
        return deps
    deps.inspector = CeleryInspector(
        settings.broker_url,
        keyprefix=settings.broker_keyprefix,
        transport_options=settings.broker_transport_options,
        timeout=settings.inspect_timeout_s,
        reping_timeout=settings.reping_timeout_s,
    )
    _results(deps, settings)
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
        deps.presence = _redis_presence(broker, settings.broker_keyprefix)
        deps.queues = RedisQueueDepths(
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
        from oomcheck.sources.presence.brokers import AmqpBrokerPresence
        from oomcheck.sources.queues import AmqpQueueDepths

        connection = _amqp_connection(settings)
        deps.presence = AmqpBrokerPresence(
            connection, deps.clock, _management_api(settings, connection)
        )
        deps.queues = AmqpQueueDepths(
            for_kombu(settings.broker_url), transport_options=settings.broker_transport_options
        )
    elif settings.broker_transport != "redis":
        deps.off["presence"] = "broker presence needs a Redis or RabbitMQ broker"
        deps.off["queues"] = "queue depths are read from Redis and RabbitMQ brokers only"
    _exits(deps, settings, budget_s)
    _wire_beat(deps, settings)
    return deps


def _results(deps: Deps, settings: Settings) -> None:
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


def _exits(deps: Deps, settings: Settings, budget_s: float) -> None:
    from oomcheck import aws

    if settings.ecs_services:
        from oomcheck.sources.ecs import EcsTasks, parse_services

        deps.ecs = EcsTasks(
            aws.client("ecs", limits=aws.logs_limits(budget_s)),
            parse_services(settings.ecs_services),
        )
    if settings.log_groups:
        from oomcheck.sources.exits import CloudWatchExitEvents

        deps.exits = CloudWatchExitEvents(
            aws.client("logs", limits=aws.logs_limits(budget_s)),
            settings.log_groups,
            # beat's containers too, when workers' are named: their exits explain beat_stopped
            containers=(*settings.containers, *settings.policy.beat_containers)
            if settings.containers
            else (),
        )
    else:
        deps.off["exits"] = "no log groups configured (OOMCHECK_LOG_GROUPS)"


def _sqs_sources(deps: Deps, settings: Settings, budget_s: float) -> None:
    """Celery on Amazon SQS: no remote control, no events, no broker connections to look at; the
    queues' attributes and dead-letter queues are read with boto3 (never a kombu channel, which
    would create the pidbox reply queue a check has no use for)."""
    from oomcheck import aws
    from oomcheck.sources.sqs import SqsQueues, queue_names

    options = settings.broker_transport_options
    why = "SQS has no remote control (Celery: no inspect, no events on SQS)"
    deps.off["inspect"] = why
    deps.off["presence"] = "SQS shows no consumer connections"
    deps.off["broker"] = (
        "SQS shows no unacked set; in-flight counts come from the sqs source instead"
    )
    deps.off["queues"] = "on SQS the queues are read by the sqs source"
    region = options.get("region")
    predefined = options.get("predefined_queues")
    deps.sqs = SqsQueues(
        aws.client(
            "sqs",
            region if isinstance(region, str) and region else None,
            limits=aws.logs_limits(budget_s),
        ),
        queue_names(settings.queues, options),
        prefix=str(options.get("queue_name_prefix") or ""),
        predefined=predefined if isinstance(predefined, dict) else {},
    )


def _oncall(deps: Deps, limits: CallLimits) -> None:
    """Silences (the state table, or a file beside the state file) and, with a bus, an event
    per victim task."""
    from oomcheck import aws

    settings = deps.settings
    store = deps.store
    deps.silences = silence_store(
        settings.table,
        settings.target,
        settings.state_file,
        client=store.client if isinstance(store, DynamoDBStateStore) else None,
    )
    if settings.event_bus:
        from oomcheck.alerting.taskevents import EventBridgeTaskEvents

        deps.task_events = EventBridgeTaskEvents(
            settings.event_bus, aws.client("events", limits=limits)
        )


def _wire_beat(deps: Deps, settings: Settings) -> None:
    """RedBeat's store, on its own Redis or the broker's; off, with why, for other schedulers."""
    from oomcheck.sources.beat import is_redbeat, off_reason

    if not is_redbeat(settings.beat_scheduler):
        deps.off["beat"] = off_reason(settings.beat_scheduler)
        return
    url = settings.redbeat_redis_url or settings.broker_url
    if settings.redbeat_redis_url is None and settings.broker_transport != "redis":
        deps.off["beat"] = (
            "RedBeat runs on Redis and the broker is not Redis: set OOMCHECK_REDBEAT_REDIS_URL "
            "(redbeat_redis_url)"
        )
        return
    from oomcheck.redact import redact
    from oomcheck.sources.beat import RedBeatSource
    from oomcheck.sources.redis_client import make_redis

    options = settings.broker_transport_options if settings.redbeat_redis_url is None else {}
    deps.beat = RedBeatSource(
        make_redis(url, transport_options=options),
        key_prefix=settings.redbeat_key_prefix,
        lock_key=settings.redbeat_lock_key,
        where=redact(url),
    )


def _channels(
    settings: Settings, write: Callable[[str], object] | None, limits: CallLimits
) -> list[Publisher]:
    """The alert topic (or the printer) first, then chat and EventBridge when configured."""
    from oomcheck import aws

    channels: list[Publisher] = []
    if settings.topic_arn or settings.chat_topic_arn:
        sns = aws.client("sns", limits=limits)
        if settings.topic_arn:
            channels.append(SnsAlerter(settings.topic_arn, client=sns))
        if settings.chat_topic_arn:
            channels.append(ChatAlerter(settings.chat_topic_arn, client=sns))
    if not settings.topic_arn:
        channels.insert(0, PrintAlerter(write or sys.stderr.write))
    if settings.event_bus:
        from oomcheck.alerting.eventbridge import EventBridgeAlerter

        channels.append(EventBridgeAlerter(settings.event_bus, aws.client("events", limits=limits)))
    return channels


def _redis_presence(broker: object, keyprefix: str) -> BrokerPresence:
    from oomcheck.sources.presence.brokers import RedisBrokerPresence

    pool = getattr(broker, "connection_pool", None)
    db = getattr(pool, "connection_kwargs", {}).get("db") if pool is not None else None
    return RedisBrokerPresence(broker, int(db) if db is not None else None, keyprefix)


def _management_api(settings: Settings, connection: Any) -> RabbitManagementApi | None:
    """RabbitMQ's management API for the broker's vhost, logged in as the API URL's userinfo
    says, else as the broker URL's (kombu's parse of it: the vhost and login the workers use)."""
    if not settings.rabbitmq_api_url:
        return None
    from oomcheck.sources.presence.management import RabbitManagementApi, api_credentials

    user, password = api_credentials(
        settings.rabbitmq_api_url, connection.userid, connection.password
    )
    return RabbitManagementApi(
        settings.rabbitmq_api_url, connection.virtual_host or "/", user, password
    )


def _amqp_connection(settings: Settings) -> Any:
    from kombu.connection import Connection

    return Connection(  # type: ignore[no-untyped-call]
        for_kombu(settings.broker_url),
        connect_timeout=3,
        transport_options=dict(settings.broker_transport_options),
    )
