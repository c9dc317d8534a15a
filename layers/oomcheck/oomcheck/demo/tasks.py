"""The Celery app the demo and the tests run in real worker processes.

Configured from the environment so a worker subprocess and the test that drives it agree:
OOMCHECK_DEMO_BROKER, OOMCHECK_DEMO_BACKEND. Results are tracked and extended, as a team that
wants to see its tasks would configure it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery import Celery

app = Celery(
    "oomcheck_demo",
    broker=os.environ.get("OOMCHECK_DEMO_BROKER", "redis://127.0.0.1:6379/14"),
    backend=os.environ.get("OOMCHECK_DEMO_BACKEND", "redis://127.0.0.1:6379/15"),
    set_as_current=False,
)
app.conf.update(
    task_track_started=True,
    result_extended=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # Short enough that the tests see a restore; long enough that nothing is restored by surprise.
    # (on SQS, the visibility timeout kombu gives the queues it creates)
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("OOMCHECK_DEMO_VISIBILITY_TIMEOUT", "3600"))
    },
    # A queue of its own when a broker is shared (RabbitMQ's default vhost in the tests).
    task_default_queue=os.environ.get("OOMCHECK_DEMO_QUEUE", "celery"),
)

# Broker connections named after the worker's nodename, as the README recommends for EKS.
if os.environ.get("OOMCHECK_DEMO_NAME_CONNECTIONS"):
    from oomcheck.naming import name_broker_connections

    name_broker_connections(app)

# Celery beat with RedBeat, when OOMCHECK_DEMO_BEAT_SCHEDULE is set (JSON: entry name ->
# {"task": name, "every": seconds, "args": [...]}): the beat demo and the beat tests. Short loop
# and lock times so that a killed beat's lock expires in seconds, as a test needs.
if os.environ.get("OOMCHECK_DEMO_BEAT_SCHEDULE"):
    import json

    app.conf.update(
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=app.conf.broker_url,
        redbeat_key_prefix=os.environ.get("OOMCHECK_DEMO_REDBEAT_PREFIX", "redbeat:"),
        redbeat_lock_timeout=int(os.environ.get("OOMCHECK_DEMO_REDBEAT_LOCK_TIMEOUT", "5")),
        beat_max_loop_interval=1,
        beat_schedule={
            name: {
                "task": entry["task"],
                "schedule": float(entry["every"]),
                "args": tuple(entry.get("args", ())),
            }
            for name, entry in json.loads(os.environ["OOMCHECK_DEMO_BEAT_SCHEDULE"]).items()
        },
    )

# A RabbitMQ quorum queue (OOMCHECK_DEMO_QUEUE_ARGUMENTS: JSON queue arguments such as
# x-queue-type, x-delivery-limit, x-dead-letter-exchange) as the default queue.
if os.environ.get("OOMCHECK_DEMO_QUEUE_ARGUMENTS"):
    import json

    from kombu.entity import Queue

    app.conf.task_queues = [
        Queue(  # type: ignore[no-untyped-call]
            app.conf.task_default_queue,
            routing_key=app.conf.task_default_queue,
            queue_arguments=json.loads(os.environ["OOMCHECK_DEMO_QUEUE_ARGUMENTS"]),
        )
    ]

_PAGE = 4096


def _allocate(mb: int, step_mb: int = 16, pause: float = 0.02) -> list[bytearray]:
    """Grow resident memory in steps, touching every page so the kernel really charges it."""
    chunks = []
    for _ in range(0, mb, step_mb):
        chunk = bytearray(step_mb * 1024 * 1024)
        for offset in range(0, len(chunk), _PAGE):
            chunk[offset] = 1
        chunks.append(chunk)
        time.sleep(pause)
    return chunks


@app.task(name="demo.hog")
def hog(mb: int, hold_s: float = 60.0) -> int:
    """Eat ``mb`` MiB and hold it: in a small memory cgroup the kernel kills this process."""
    held = _allocate(mb)
    time.sleep(hold_s)
    return sum(len(c) for c in held)


@app.task(name="demo.grow")
def grow(mb: int, until_path: str, more_mb: int, wait_s: float = 60.0) -> int:
    """A leak in two steps: grow to ``mb`` MiB, hold it until ``until_path`` exists (at most
    ``wait_s``), then grow ``more_mb`` MiB more, which in a small memory cgroup is the kill. The
    pause is what lets a checker see the pressure, and name this task, before the kernel acts."""
    held = _allocate(mb)
    deadline = time.monotonic() + wait_s
    while not Path(until_path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    held += _allocate(more_mb)
    time.sleep(wait_s)
    return sum(len(c) for c in held)


@app.task(name="demo.sleepy")
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="demo.sleepy_late", acks_late=True)
def sleepy_late(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="demo.loop_hog", acks_late=True, reject_on_worker_lost=True)
def loop_hog(mb: int) -> int:
    """Always OOMs, and is requeued each time its process dies: a kill loop."""
    held = _allocate(mb)
    time.sleep(60)
    return sum(len(c) for c in held)


@app.task(name="demo.die_late", acks_late=True, reject_on_worker_lost=True)
def die_late(hold_s: float = 0.0) -> None:
    """Kills its own process on every delivery after ``hold_s`` (as an OOM kill would after the
    task's memory grew, without a memory cgroup): with reject_on_worker_lost the message goes
    back to the queue each time."""
    time.sleep(hold_s)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="demo.limited", time_limit=5, soft_time_limit=4)
def limited(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="demo.pid")
def pid() -> int:
    return os.getpid()
