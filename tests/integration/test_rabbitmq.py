"""The same whole-worker death with a RabbitMQ broker: acks_late work is requeued at once."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomcheck.demo import services
from oomcheck.model import Kind, Verdict
from tests.integration.conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]


@contextlib.contextmanager
def _vhost() -> Iterator[str]:
    """A vhost of our own when rabbitmqctl can make one (nobody else's workers answer our
    broadcasts there); else the default vhost with a queue of our own."""
    ctl = shutil.which("rabbitmqctl")
    name = f"oomcheck-{uuid.uuid4().hex[:8]}"
    made = False
    if ctl:
        try:
            subprocess.run([ctl, "add_vhost", name], check=True, capture_output=True, timeout=30)
            subprocess.run(
                [ctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            made = True
        except (subprocess.SubprocessError, OSError):
            made = False
    try:
        yield name if made else ""
    finally:
        if made and ctl:
            subprocess.run(
                [ctl, "delete_vhost", name], capture_output=True, timeout=30, check=False
            )


@pytest.fixture
def rabbit_fleet(redis_db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    url = services.rabbitmq_url()
    if url is None:
        pytest.skip("RabbitMQ is not reachable on 127.0.0.1:5672")
    with _vhost() as vhost:
        # amqp://user:pw@host:port/<vhost>; the default vhost "/" is written "//"
        broker = url[: url.index("/", len("amqp://"))] + "/" + vhost if vhost else url
        fleet = Fleet(
            broker=broker,
            backend=redis_db_url,
            tmp=tmp_path,
            queue=f"oomcheck-test-{uuid.uuid4().hex[:8]}",
        )
        try:
            yield fleet
        finally:
            fleet.stop()


def test_whole_worker_sigkilled_on_rabbitmq(rabbit_fleet: Fleet):
    fleet = rabbit_fleet
    worker = fleet.start("rabbit-victim@oomcheck-test", concurrency=2)
    plain = fleet.send("demo.sleepy", 120)
    late = fleet.send("demo.sleepy_late", 120)
    fleet.wait_started(plain, late)
    assert fleet.check().exit_code == 0
    worker.kill(signal.SIGKILL)
    worker.wait()
    report = fleet.check()
    [lost] = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    # RabbitMQ requeued the unacked acks_late message when the channel closed; the plain task's
    # message was acked when it started
    assert {t.id: t.verdict for t in lost.tasks} == {plain: Verdict.LOST, late: Verdict.REDELIVERED}
    assert report.sources["broker"].startswith("off: RabbitMQ requeues")
    assert [m.kind for m in fleet.publisher.messages] == ["worker_lost"]
