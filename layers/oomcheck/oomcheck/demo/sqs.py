"""`oomcheck demo --sqs`: a Celery worker on Amazon SQS is OOM-killed; the alert names its task
and what became of it, with no remote control to ask anyone.

As `oomcheck demo`, on 127.0.0.1: a private redis-server (the result backend only), a moto
server whose SQS is the broker (kombu's SQS transport through AWS_ENDPOINT_URL; the worker needs
`kombu[sqs]`), one worker in a memory cgroup watched by a supervisor that writes the ECS
task-stopped event, and the checker watching, its alert read back from SNS through SQS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from oomcheck.demo import run
from oomcheck.demo.workers import WorkerProcess, wait_for

Out = Any
TASK = "demo.hog"  # early ack (Celery's default): its message is deleted when it starts


def run_sqs_demo(*, use_cgroup: bool = True, show_json: bool = False, out: Out = run.say) -> int:
    started = time.monotonic()
    # the worker's SQS transport needs pycurl; the checker does not
    if importlib.util.find_spec("pycurl") is None:
        out("the demo's worker needs kombu's SQS transport: pip install 'kombu[sqs]'")
        return 1
    out("oomcheck demo --sqs: a Celery worker on Amazon SQS is OOM-killed; oomcheck tells you,")
    out("with no remote control, no events and no broker connections to look at.")
    out("")
    with run._environment(), contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="oomcheck-demo-sqs-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stage = run._services(stack, out)
        if stage is None:
            return 1
        cgroup, note = run._cgroup(stack, use_cgroup)
        worker = WorkerProcess(
            run.WORKER,
            "sqs://",
            stage.backend,
            concurrency=1,
            cgroup=cgroup,
            log_path=str(Path(workdir) / "worker.log"),
        )
        worker.start()
        stack.callback(worker.stop)
        where = f"a memory cgroup of {run.LIMIT_MB} MiB" if cgroup else "no memory cgroup"
        out(f"[3/6] worker {run.WORKER} on sqs:// (prefork, pid {worker.pid}) in {where}")
        if note:
            out(f"      NOTE: no real OOM kill here ({note}); the worker gets SIGKILL instead")
        supervisor = run.Supervisor(worker, cgroup, stage.logs).start()
        stack.callback(supervisor.stop)
        deps, publisher = _checker(stage)
        task_id = _send_and_kill(stage, deps, worker, supervisor, out)
        report = run._watch(deps, publisher, out)
        if report is None:
            out("the demo did not see its alert: see above")
            return 1
        received = run._read_queue(stage.sqs, stage.queue_url)
    out("")
    out(f"ALERT read back from SNS through SQS ({len(received)} message(s)), task {task_id}:")
    out("")
    for item in received:
        out(f"Subject: {item['subject']}")
        out("")
        out(item["payload"]["text"])
        out("")
    from oomcheck.report.table import render_table

    out(render_table(report))
    if show_json:
        out(json.dumps(report.to_json(), indent=2, default=str))
    out(f"demo finished in {time.monotonic() - started:.1f} s; everything it started is stopped")
    return 0 if received else 1


def _checker(stage: Any) -> tuple[Any, run.TimedPublisher]:
    from oomcheck.config.settings import Settings
    from oomcheck.model import Policy
    from oomcheck.wiring import build_deps

    settings = Settings(
        broker_url="sqs://",
        result_backend=stage.backend,
        table=run.TABLE,
        topic_arn=stage.topic_arn,
        log_groups=(run.LOG_GROUP,),
        queues=("celery",),
        watch_interval_s=1.0,
        # as `oomcheck -A oomcheck.demo.tasks` reads it from the app
        policy=Policy(task_acks_late={"demo.sleepy_late": True, "demo.loop_hog": True, "*": False}),
    )
    deps = build_deps(settings)
    publisher = run.TimedPublisher(deps.publisher)
    deps.publisher = publisher
    return deps, publisher


def _send_and_kill(
    stage: Any, deps: Any, worker: WorkerProcess, supervisor: run.Supervisor, out: Out
) -> str:
    from celery import Celery

    from oomcheck.model import Mode
    from oomcheck.runner import run_once

    first = run_once(deps, Mode.CHECK)
    sources = ", ".join(f"{k}: {v.state.value}" for k, v in first.sources.items())
    out(f"[4/6] first check in {first.duration_ms} ms: {sources}")
    sender = Celery("demo-client", broker="sqs://", backend=stage.backend, set_as_current=False)
    try:
        task_id = str(sender.send_task(TASK, args=[run.HOG_MB, 60]).id)
    finally:
        sender.close()
    out(f"[5/6] sent {TASK}({run.HOG_MB} MiB) as task {task_id}")
    results = deps.results
    wait_for(
        lambda: any(t.id == task_id for t in results.scan(time.time()).started),
        60,
        what="the task to start",
    )
    if supervisor.cgroup is None:
        worker.kill()
    wait_for(lambda: supervisor.death is not None, 60, what="the worker's death")
    death = supervisor.death
    assert death is not None
    out(f"      worker died: {death.how}, exit {death.exit_code}; ECS's stopped event written")
    return task_id
