"""`oomcheck demo --memory`: the warning before the kill. A task grows in a worker's memory
cgroup; oomcheck says which task it is while the kernel has not yet acted, then the kill's alert
says which task was growing.

What runs, all on 127.0.0.1: the services of the first demo (a private redis-server, a moto
server), one Celery worker named after its "pod" in a memory cgroup of 256 MiB, a sampler that
plays the CloudWatch agent (an EKS Container Insights performance record of the cgroup's real
memory use every second instead of every minute) and the supervisor of the first demo, which
ends the whole container when the kernel kills in it and writes the OOMKilled restart record.
Without a writable memory cgroup the process group's RSS stands in for the cgroup's usage and
the worker gets SIGKILL instead of a kernel kill, and the demo says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomcheck.demo import run
from oomcheck.demo.workers import MemoryCgroup, WorkerProcess, memory_cgroup_available, wait_for
from oomcheck.model import Kind, Mode

POD = "celery-worker-5d8f9c7b6-x2k4p"
WORKER = f"worker@{POD}"  # celery's default nodename in a pod: its host part is the pod name
PERF_GROUP = "/aws/containerinsights/demo-cluster/performance"
NODE = "ip-10-0-1-5.eu-west-1.compute.internal"
LIMIT_MB = 256
MIB = 1024 * 1024
SAMPLE_S = 1.0
DEADLINE_S = 45.0
DEMO_THRESHOLD = 0.8
Out = Callable[[str], None]


def eks_record(
    used: int, limit: int, at: float, *, restarts: int | None = None, reason: str = "OOMKilled"
) -> dict[str, Any]:
    """A Type=Container EKS performance record, in the fields AWS documents for the agent's
    performance log events (bytes; Timestamp a string of ms)."""
    record: dict[str, Any] = {
        "Type": "Container",
        "Timestamp": str(round(at * 1000)),
        "ClusterName": "demo-cluster",
        "NodeName": NODE,
        "PodName": "celery-worker",
        "FullPodName": POD,
        "container_memory_working_set": used,
        "container_memory_usage": used,
        "container_memory_limit": limit,
        "container_memory_utilization_over_container_limit": round(100 * used / limit, 3),
        "container_status": "Running",
        "kubernetes": {
            "container_name": "worker",
            "host": NODE,
            "namespace_name": "jobs",
            "pod_name": POD,
        },
    }
    if restarts is not None:
        record["number_of_container_restarts"] = restarts
        record["container_last_termination_reason"] = reason
    return record


def put_record(logs: Any, record: dict[str, Any]) -> None:
    logs.put_log_events(
        logGroupName=PERF_GROUP,
        logStreamName=NODE,
        logEvents=[{"timestamp": int(record["Timestamp"]), "message": json.dumps(record)}],
    )


def _group_rss(pgid: int) -> int:
    """The resident memory of a process group (the worker and its pool): the stand-in for a
    cgroup's usage where no cgroup can be made."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return total


@dataclass
class Sampler:
    """Plays the CloudWatch agent: a memory record of the worker's container every SAMPLE_S."""

    logs: Any
    usage: Callable[[], int]
    limit: int
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            with contextlib.suppress(OSError):  # the cgroup goes away with the container
                put_record(self.logs, eks_record(self.usage(), self.limit, time.time()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class PodSupervisor(run.Supervisor):
    """The first demo's supervisor, reporting the death as Kubernetes would: the restarted
    container's performance record says why the last one ended (OOMKilled, or Error for a
    SIGKILL that was not the kernel's)."""

    def _report(self, death: run.Death) -> None:
        self.death = death
        limit = LIMIT_MB * MIB
        reason = "OOMKilled" if death.oom else "Error"
        put_record(self.logs, eks_record(0, limit, death.at, restarts=1, reason=reason))


@dataclass
class _Scene:
    stage: Any
    deps: Any
    publisher: run.TimedPublisher
    worker: WorkerProcess
    cgroup: MemoryCgroup | None
    flag: Path
    usage: Callable[[], int]


def run_memory_demo(*, use_cgroup: bool = True, out: Out = run.say) -> int:
    """The scenario, printed as it goes; 0 when both alerts were read back from SNS."""
    out("oomcheck demo --memory: a task's memory grows; oomcheck names it before the kill.")
    out("")
    with run._environment(), contextlib.ExitStack() as stack:
        scene = _setup(stack, use_cgroup, out)
        if scene is None:
            return 1
        task_id = _send_grow(scene, out)
        warned = _watch_for(scene, Kind.MEMORY_PRESSURE, out)
        if warned is None:
            out("no memory_pressure alert within the deadline")
            return 1
        _let_it_die(scene, out)
        if _watch_for(scene, Kind.WORKER_LOST, out) is None:
            out("no worker_lost alert within the deadline")
            return 1
        received = run._read_queue(scene.stage.sqs, scene.stage.queue_url)
        _show(received, task_id, out)
    return 0


def _setup(stack: contextlib.ExitStack, use_cgroup: bool, out: Out) -> _Scene | None:
    workdir = tempfile.mkdtemp(prefix="oomcheck-demo-memory-")
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    stage = run._services(stack, out)
    if stage is None:
        return None
    stage.logs.create_log_group(logGroupName=PERF_GROUP)
    stage.logs.create_log_stream(logGroupName=PERF_GROUP, logStreamName=NODE)
    cgroup, note = _cgroup(stack, use_cgroup)
    worker = WorkerProcess(
        WORKER, stage.broker, stage.backend, cgroup=cgroup, log_path=f"{workdir}/worker.log"
    )
    worker.start()
    stack.callback(worker.stop)
    deps, publisher = _checker(stage)
    worker.wait_ready(deps.inspector.app.control)
    where = f"a memory cgroup (v{cgroup.version}) of {LIMIT_MB} MiB" if cgroup else "no cgroup"
    out(f"[3/6] worker {WORKER} (prefork, pid {worker.pid}) in {where}")
    if note:
        out(f"      NOTE: no memory cgroup here ({note}): the RSS of the worker's processes")
        out(f"      stands in against a {LIMIT_MB} MiB limit, and the kill is a SIGKILL")
    usage = cgroup.usage_bytes if cgroup else (lambda: _group_rss(worker.pid))
    stack.callback(Sampler(stage.logs, usage, LIMIT_MB * MIB).start().stop)
    stack.callback(PodSupervisor(worker, cgroup, stage.logs).start().stop)
    out(f"      a record of its memory goes to {PERF_GROUP} every {SAMPLE_S:.0f} s")
    return _Scene(stage, deps, publisher, worker, cgroup, Path(workdir) / "grow-more", usage)


def _cgroup(stack: contextlib.ExitStack, use_cgroup: bool) -> tuple[MemoryCgroup | None, str]:
    if not use_cgroup:
        return None, "--no-cgroup given"
    ok, why = memory_cgroup_available()
    if not ok:
        return None, why
    cgroup = MemoryCgroup.create(LIMIT_MB * MIB, group_kill=True)
    stack.callback(cgroup.remove)
    return cgroup, ""


def _checker(stage: Any) -> tuple[Any, run.TimedPublisher]:
    from oomcheck.config.settings import Settings
    from oomcheck.model import Policy
    from oomcheck.wiring import build_deps

    settings = Settings(
        broker_url=stage.broker,
        result_backend=stage.backend,
        table=run.TABLE,
        topic_arn=stage.topic_arn,
        log_groups=(PERF_GROUP,),
        inspect_timeout_s=0.5,
        reping_timeout_s=0.5,
        # The task holds at about 88 % of the limit (more would risk the kill before the
        # warning): the demo warns from 80 %, so that page cache and timing cannot keep the
        # held task under the threshold (the default, 90 %, missed it about one run in ten).
        policy=Policy(memory_threshold=DEMO_THRESHOLD),
    )
    deps = build_deps(settings)
    publisher = run.TimedPublisher(deps.publisher)
    deps.publisher = publisher
    return deps, publisher


def _send_grow(scene: _Scene, out: Out) -> str:
    """Grow the container to about 90 % of its limit and hold there."""
    from celery import Celery

    used = scene.usage()
    # the cgroup also charges page cache and the pool child's own growth, which RSS does not show
    target = 0.88 if scene.cgroup is not None else 0.94
    grow_mb = max(16, int((target * LIMIT_MB * MIB - used) / MIB))
    stage = scene.stage
    sender = Celery("demo-client", broker=stage.broker, backend=stage.backend, set_as_current=False)
    try:
        task_id = str(
            sender.send_task("demo.grow", args=[grow_mb, str(scene.flag), 3 * LIMIT_MB, 60]).id
        )
    finally:
        sender.close()
    out(f"[4/6] the worker uses {used / MIB:.0f} MiB; sent demo.grow as task {task_id}:")
    out(f"      it grows by {grow_mb} MiB, holds, then asks for {3 * LIMIT_MB} MiB more")
    return task_id


def _watch_for(scene: _Scene, kind: Kind, out: Out) -> Any:
    """Check every second until an alert of ``kind`` is accepted; the report, or None."""
    from oomcheck.runner import run_once

    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        report = run_once(scene.deps, Mode.WATCH)
        kinds = [f.kind.value for f in report.findings if f.alertable]
        out(f"      check in {report.duration_ms} ms: findings {kinds or 'none'}")
        if any(m.kind == kind for _, m in scene.publisher.accepted):
            return report
        time.sleep(1.0)
    return None


def _let_it_die(scene: _Scene, out: Out) -> None:
    out("[5/6] memory_pressure was alerted while the task still runs; now the task grows on")
    scene.flag.touch()
    if scene.cgroup is None:
        time.sleep(0.5)
        scene.worker.kill(signal.SIGKILL)
    wait_for(lambda: scene.worker.wait(0.1) is not None, 30, what="the worker's death")
    how, reason = (
        ("the kernel OOM-killed it", "OOMKilled") if scene.cgroup else ("SIGKILL", "Error")
    )
    out(f"[6/6] the worker died ({how}); the pod's next record says {reason}")


def _show(received: list[dict[str, Any]], task_id: str, out: Out) -> None:
    out("")
    out(f"ALERTS read back from SNS through SQS ({len(received)} message(s)):")
    for item in received:
        out("")
        out(f"Subject: {item['subject']}")
        out("")
        out(item["payload"]["text"])
    named = sum(task_id in item["payload"]["text"] for item in received)
    out("")
    out(f"task {task_id} is named in {named} of {len(received)} alert(s)")
