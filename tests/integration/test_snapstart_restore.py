"""SnapStart's hooks for real: the Lambda handler's process is snapshotted with its clients
built, every connection it held is severed, and the restored copy detects a real worker's death
and publishes to SNS at once, under a lease owner of its own.

``snapshot_restore_py`` exists only in Lambda's Python runtimes (it is not in our lock): this
test puts a minimal module of that name into ``sys.modules`` for itself, registering hooks the
way the runtime documents (``register_before_snapshot(func, *args, **kwargs)`` and
``register_after_restore(...)``; before-snapshot hooks run in reverse order of registration,
after-restore hooks in order). The "init" here goes further than Lambda's: one check runs before
the snapshot, so that Redis pools, kombu's pools and botocore's HTTP pools all hold connections
when it is taken.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from oomcheck import provision
from oomcheck.demo import services
from oomcheck.demo.arrivals import sqs_batch
from oomcheck.demo.ecs import ecs_task_stopped_event
from oomcheck.sources.presence.owners import OWN_NAME
from tests.integration.conftest import Fleet
from tests.unit.test_handler import Context

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "functions" / "checker" / "app.py"
Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass
class FakeRuntime:
    """What Lambda's runtime does with the registered hooks."""

    before: list[Hook] = field(default_factory=list)
    after: list[Hook] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        module = types.ModuleType("snapshot_restore_py")

        def register_before_snapshot(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.before.append((func, args, kwargs))
            return func

        def register_after_restore(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.after.append((func, args, kwargs))
            return func

        module.register_before_snapshot = register_before_snapshot  # type: ignore[attr-defined]
        module.register_after_restore = register_after_restore  # type: ignore[attr-defined]
        return module

    def snapshot(self) -> float:
        started = time.monotonic()
        for func, args, kwargs in reversed(self.before):
            func(*args, **kwargs)
        return time.monotonic() - started

    def restore(self) -> float:
        started = time.monotonic()
        for func, args, kwargs in self.after:
            func(*args, **kwargs)
        return time.monotonic() - started


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    server = services.start_moto()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The state table and the alert topic on a moto server, the topic read through SQS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    name = f"snap-{uuid.uuid4().hex[:8]}"
    provision.ensure_table(boto3.client("dynamodb"), name)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    return {"table": name, "topic": topic, "queue": queue}


def _load_app(runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime.module())
    name = f"oomcheck_checker_app_snap_{uuid.uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _own_connections(client: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in client.client_list() if c.get("name") == OWN_NAME]


def _received(queue: str) -> list[str]:
    """What the topic delivered to the queue, waiting up to 10 one-second polls for it."""
    sqs = boto3.client("sqs")
    for _ in range(10):
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        if got.get("Messages"):
            return [m["Body"] for m in got["Messages"]]
    return []


def test_a_restored_copy_reconnects_and_alerts_under_an_owner_of_its_own(
    fleet: Fleet,
    aws: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the handler's environment (state in DynamoDB, alerts to SNS, both on moto), a worker
    # on a task whose address is 10.9.7.1, and the handler module loaded with the runtime's
    # hook registry present
    for key, value in {
        "OOMCHECK_BROKER_URL": fleet.broker,
        "OOMCHECK_RESULT_BACKEND": fleet.backend,
        "OOMCHECK_TABLE": aws["table"],
        "OOMCHECK_TOPIC_ARN": aws["topic"],
        "OOMCHECK_TARGET": "snap",
        "OOMCHECK_INSPECT_TIMEOUT": "1",
        "OOMCHECK_REPING_TIMEOUT": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "oomcheck-snap-test",
        # a service name of its own: Powertools reuses a logger of the same name (and the
        # stream it was given) made by another test in this process
        "POWERTOOLS_SERVICE_NAME": f"oomcheck-snap-{uuid.uuid4().hex[:6]}",
    }.items():
        monkeypatch.setenv(key, value)
    worker = fleet.start("snap@ip-10-9-7-1")
    runtime = FakeRuntime()
    app = _load_app(runtime, monkeypatch)
    assert len(runtime.before) == 1 and len(runtime.after) == 1
    worker.wait_ready(fleet.control)
    # ...and a check before the snapshot (the worker on the roster; connections in every pool)
    app.handler({"mode": "check"}, Context())
    deps = app._deps
    assert deps is not None
    admin = redis.Redis.from_url(fleet.broker)
    assert _own_connections(admin), "the check left no pooled connection to sever"
    owner = deps.owner

    # When the snapshot is taken (hooks first), every connection the process held is severed
    snapshot_s = runtime.snapshot()
    assert app._deps is deps, "the snapshot must hold the clients built at init"
    for conn in _own_connections(admin):
        admin.client_kill_filter(_id=conn["id"])
    assert _own_connections(admin) == []
    restore_s = runtime.restore()
    capsys.readouterr()
    # and the worker is SIGKILLed, ECS's OutOfMemoryError event arriving through SQS
    worker.kill(signal.SIGKILL)
    assert worker.wait(10) is not None
    event = ecs_task_stopped_event(
        cluster="celery-prod",
        task_id=uuid.uuid4().hex,
        private_ip="10.9.7.1",
        container="worker",
        exit_code=137,
        reason="OutOfMemoryError: Container killed due to memory usage",
        stop_code="EssentialContainerExited",
        stopped_reason="Essential container in task exited",
        at=time.time(),
    )
    started = time.monotonic()
    body = app.handler(sqs_batch([event], sent_at=time.time()), Context())
    took = time.monotonic() - started

    # Then the restored copy detects the death and publishes it, without waiting out a timeout
    assert body == {"batchItemFailures": []}
    messages = _received(aws["queue"])
    assert len(messages) == 1 and "snap@ip-10-9-7-1" in messages[0], messages
    assert took < 5.0, f"the first check after the restore took {took:.1f} s"
    # under a lease owner of its own, logged as a cold start, after hooks well inside 10 s
    assert deps.owner != owner and deps.owner.startswith("run-")
    lines = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"run finished"' in line
    ]
    assert lines and lines[-1]["run_owner"] == deps.owner and lines[-1]["cold_start"] is True
    assert snapshot_s < 2.0 and restore_s < 2.0, (snapshot_s, restore_s)


def test_every_restored_copy_draws_its_own_identity(fleet: Fleet) -> None:
    """kombu's node id (the Celery reply queue's name comes from it, the pid, the thread and an
    object address: equal in every copy of one snapshot) and the lease owner are drawn again."""
    import kombu.common

    from oomcheck.entry import snapshot

    deps = fleet.deps
    node, owner = kombu.common.get_node_id(), deps.owner
    snapshot.after_restore(lambda: deps)
    assert kombu.common.get_node_id() != node
    assert deps.owner != owner
