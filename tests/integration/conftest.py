"""Real Celery worker processes on a real Redis, and a checker wired to them."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from oomcheck.alerting.render import AlertMessage
from oomcheck.config.settings import Settings
from oomcheck.demo import services
from oomcheck.demo.workers import MemoryCgroup, WorkerProcess, memory_cgroup_available, wait_for
from oomcheck.ports import Deps
from oomcheck.report.document import Report
from oomcheck.runner import run_once
from oomcheck.wiring import build_deps


class CapturingPublisher:
    """Stands in for SNS in integration tests: records what would be published."""

    def __init__(self) -> None:
        self.messages: list[AlertMessage] = []

    def describe(self) -> str:
        return "captured"

    def publish(self, message: AlertMessage) -> str:
        self.messages.append(message)
        return f"m-{len(self.messages)}"


@dataclass
class Fleet:
    broker: str
    backend: str
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    cgroups: list[MemoryCgroup] = field(default_factory=list)
    publisher: CapturingPublisher = field(default_factory=CapturingPublisher)
    queue: str = "celery"
    # Settings fields to change (log_groups, policy...) for the checker of this fleet
    overrides: dict[str, Any] = field(default_factory=dict)
    _deps: Deps | None = None
    _client: Any = None

    def settings(self) -> Settings:
        return Settings(
            broker_url=self.broker,
            result_backend=self.backend,
            state_file=str(self.tmp / "state.json"),
            inspect_timeout_s=1.0,
            reping_timeout_s=1.0,
        ).with_overrides(**self.overrides)

    @property
    def deps(self) -> Deps:
        if self._deps is None:
            deps = build_deps(self.settings())
            deps.publisher = self.publisher
            self._deps = deps
        return self._deps

    @property
    def control(self):
        assert self.deps.inspector is not None
        return self.deps.inspector.app.control

    def send(self, task: str, *args: object) -> str:
        """Send a demo task by name from a client app of our own; returns its id."""
        if self._client is None:
            from celery import Celery

            self._client = Celery(
                "client", broker=self.broker, backend=self.backend, set_as_current=False
            )
        return str(self._client.send_task(task, args=list(args), queue=self.queue).id)

    def start(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 1,
        memory_mb: int | None = None,
    ) -> WorkerProcess:
        cgroup = None
        if memory_mb is not None:
            cgroup = MemoryCgroup.create(memory_mb * 1024 * 1024)
            self.cgroups.append(cgroup)
        worker = WorkerProcess(
            name,
            self.broker,
            self.backend,
            pool=pool,
            concurrency=concurrency,
            cgroup=cgroup,
            log_path=str(self.tmp / f"{name}.log"),
            extra_env={"OOMCHECK_DEMO_QUEUE": self.queue},
        )
        self.workers.append(worker.start())
        worker.wait_ready(self.control)
        return worker

    def check(self, mode: str = "check") -> Report:
        return run_once(self.deps, mode)

    def result(self, task_id: str) -> bytes | None:
        client = redis.Redis.from_url(self.backend)
        try:
            return client.get(f"celery-task-meta-{task_id}")
        finally:
            client.close()

    def wait_started(self, *task_ids: str, timeout: float = 20.0) -> None:
        def all_started() -> bool:
            return all(
                (self.result(t) or b"").startswith(b'{"status": "STARTED"') for t in task_ids
            )

        wait_for(all_started, timeout, what=f"STARTED records of {task_ids}")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for cgroup in self.cgroups:
            cgroup.remove()
        if self._deps is not None and self._deps.inspector is not None:
            self._deps.inspector.close()
        if self._client is not None:
            self._client.close()


@pytest.fixture
def fleet(redis_db_url: str, broker_db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(broker=broker_db_url, backend=redis_db_url, tmp=tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def cgroup_or_skip_reason() -> str | None:
    ok, why = memory_cgroup_available()
    return None if ok else why


def poll_checks(
    fleet: Fleet, until: Callable[[Report], bool], *, timeout: float, interval: float = 1.0
) -> Report:
    """Run checks until one satisfies ``until``; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        report = fleet.check()
        if until(report):
            return report
        if time.monotonic() > deadline:
            kinds = [f.kind.value for f in report.findings]
            raise AssertionError(
                f"no matching report within {timeout} s; last findings {kinds}, "
                f"sources {report.sources}"
            )
        time.sleep(interval)


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


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def any_fleet(
    request: pytest.FixtureRequest, redis_db_url: str, broker_db_url: str, tmp_path: Path
) -> Iterator[Fleet]:
    """The same fleet on a Redis broker and on RabbitMQ (skipped where it is not reachable)."""
    if request.param == "redis":
        fleet = Fleet(broker=broker_db_url, backend=redis_db_url, tmp=tmp_path)
        try:
            yield fleet
        finally:
            fleet.stop()
        return
    with _rabbitmq_fleet(redis_db_url, tmp_path) as fleet:
        yield fleet


@contextlib.contextmanager
def _rabbitmq_fleet(redis_db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet on RabbitMQ, in a vhost of its own where rabbitmqctl can make one; skipped where
    RabbitMQ is not reachable."""
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


@pytest.fixture
def rabbitmq_fleet(redis_db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet on RabbitMQ alone (skipped where it is not reachable)."""
    with _rabbitmq_fleet(redis_db_url, tmp_path) as fleet:
        yield fleet
