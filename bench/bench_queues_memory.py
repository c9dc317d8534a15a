"""Cost per run of the queue and memory reads, with 8 real workers and 20 queues.

    python -m bench.bench_queues_memory [--runs N]

Figures (medians): the active_queues() broadcast next to active() (the inspect pass gains one),
the Redis queue-depth read (commands and round trips counted by the server's commandstats),
the RabbitMQ read when one is reachable, the memory parser per record (the log read itself makes
no extra FilterLogEvents call), and a whole healthy check with every source on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.common import Result, moto_server, progress
from oomcheck.config.settings import Settings
from oomcheck.demo import services
from oomcheck.demo.workers import WorkerProcess
from oomcheck.exitparse import parse_message
from oomcheck.runner import run_once
from oomcheck.sources.queues import AmqpQueueDepths, RedisQueueDepths
from oomcheck.wiring import build_deps

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 8
QUEUES = [f"q{i:02d}" for i in range(19)] + ["celery"]


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def publish(broker: str, names: list[str]) -> None:
    app = Celery("bench-publisher", broker=broker, set_as_current=False)
    try:
        for i, name in enumerate(names):
            for priority in (0, 3, 9)[: 1 + i % 3]:
                app.send_task("app.nothing", queue=name, priority=priority)
    finally:
        app.close()


def commandstats(client: Any) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in client.info("commandstats").items()}


def redis_figures(broker: str, runs: int) -> dict[str, Any]:
    client = redis.Redis.from_url(broker)
    reader = RedisQueueDepths(client)
    reader.depths(QUEUES)  # connect outside the measurement
    before = commandstats(client)
    read = reader.depths(QUEUES)
    after = commandstats(client)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["cmdstat_info"] = delta.get("cmdstat_info", 0) - 1  # our own INFO between the two
    commands = {k.removeprefix("cmdstat_"): v for k, v in delta.items() if v > 0}
    figures = {
        "queues": len(read.depths),
        "messages": sum(d.messages for d in read.depths),
        "commands": commands,
        "round_trips": read.round_trips,
        "ms": round(median_ms(lambda: reader.depths(QUEUES), runs), 2),
    }
    client.close()
    return figures


def amqp_figures(runs: int) -> dict[str, Any] | None:
    url = services.rabbitmq_url()
    if url is None:
        return None
    from kombu import Connection, Queue

    names = [f"oomcheck-bench-{n}" for n in QUEUES]
    with Connection(url) as connection:
        channel = connection.channel()
        for name in names:
            Queue(name, channel=channel, auto_delete=False).declare()
        try:
            reader = AmqpQueueDepths(url)
            read = reader.depths(names)
            ms = median_ms(lambda: reader.depths(names), runs)
        finally:
            for name in names:
                channel.queue_delete(name)
    return {"queues": len(read.depths), "round_trips": read.round_trips, "ms": round(ms, 2)}


def parse_figures() -> dict[str, float]:
    out = {}
    for name in ("ecs-container-insights-memory.json", "eks-container-insights-memory.json"):
        records = [json.dumps(r) for r in json.loads((ROOT / "events" / name).read_text())]
        batch = records * (1000 // len(records))
        start = time.perf_counter()
        for message in batch:
            parse_message(message)
        out[name.split("-")[0]] = round((time.perf_counter() - start) * 1e6 / len(batch), 1)
    return out


def inspect_figures(deps: Any, names: list[str], runs: int) -> dict[str, float]:
    inspector = deps.inspector

    def ask(method: str) -> Callable[[], object]:
        def call() -> object:
            reply = inspector._inspect(method, destination=names, limit=len(names))
            assert len(reply) == len(names), (method, len(reply))
            return reply

        return call

    return {
        "active_ms": round(median_ms(ask("active"), runs), 2),
        "active_queues_ms": round(median_ms(ask("active_queues"), runs), 2),
        "observe_ms": round(median_ms(lambda: inspector.observe(names, discover=False), runs), 2),
    }


PERF_GROUP = "/aws/containerinsights/bench/performance"


def memory_group(workers: int) -> None:
    """A Container Insights performance group on the moto server with a minute of samples: one
    EKS record per worker's pod (the nodename's host part), at 80 % of a 1 GiB limit."""
    from oomcheck.aws import client
    from oomcheck.demo.memory import eks_record

    logs = client("logs")
    logs.create_log_group(logGroupName=PERF_GROUP)
    logs.create_log_stream(logGroupName=PERF_GROUP, logStreamName="node-1")
    now = time.time()
    events = []
    for i in range(workers):
        record = eks_record(int(0.8 * 2**30), 2**30, now - 30 + i)
        record["kubernetes"]["pod_name"] = f"bench-{i}"
        events.append({"timestamp": int(record["Timestamp"]), "message": json.dumps(record)})
    logs.put_log_events(logGroupName=PERF_GROUP, logStreamName="node-1", logEvents=events)


def memory_read_figures(deps: Any, runs: int) -> dict[str, Any]:
    exits = deps.exits
    now = time.time()
    read = exits.read(now - 60, now)
    return {
        "samples": len(read.memory),
        "ms_moto": round(median_ms(lambda: exits.read(now - 60, now), runs), 2),
    }


def measure(runs: int) -> dict[str, Any]:
    """Every figure, as a dict (printed by ``main``, turned into rows by ``run``)."""
    with moto_server():
        memory_group(WORKERS)
        return _measure(runs)


def _measure(runs: int) -> dict[str, Any]:
    server = services.start_redis()
    base = f"redis://127.0.0.1:{server.port}"
    broker, backend = f"{base}/0", f"{base}/1"
    workers: list[WorkerProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            broker_url=broker,
            result_backend=backend,
            state_file=str(Path(tmp) / "state.json"),
            queues=tuple(QUEUES[:-1]),
            log_groups=(PERF_GROUP,),
        )
        deps = build_deps(settings)
        try:
            for i in range(WORKERS):
                worker = WorkerProcess(f"celery@bench-{i}", broker, backend, pool="solo")
                workers.append(worker.start())
            for worker in workers:
                worker.wait_ready(deps.inspector.app.control)  # type: ignore[union-attr]
            names = sorted(w.name for w in workers)
            publish(broker, QUEUES[:-1])
            figures: dict[str, Any] = {"workers": WORKERS, "queues": len(QUEUES)}
            figures["inspect"] = inspect_figures(deps, names, runs)
            figures["redis_depths"] = redis_figures(broker, runs)
            figures["amqp_depths"] = amqp_figures(min(runs, 10)) or "RabbitMQ not reachable"
            figures["memory_parse_us_per_record"] = parse_figures()
            figures["memory_read"] = memory_read_figures(deps, runs)
            run_once(deps, "check")  # first run: discovery waits the full inspect timeout
            reports = [run_once(deps, "check") for _ in range(min(runs, 10))]
            figures["healthy_check_ms"] = statistics.median(r.duration_ms for r in reports)
            figures["healthy_check_sources"] = dict(reports[-1].sources)
            figures["healthy_check_stats"] = dict(reports[-1].stats)
            return figures
        finally:
            for worker in workers:
                worker.stop()
            if deps.inspector is not None:
                deps.inspector.close()
            server.stop()


def run(quick: bool = False) -> Result:
    """The rows of ``python -m bench`` (``--only queues``)."""
    runs = 10 if quick else 30
    progress(f"queues: {WORKERS} solo workers, {len(QUEUES)} queues, {runs} runs per figure")
    f = measure(runs)
    result = Result("queues", tag="Q")
    inspect, depths = f["inspect"], f["redis_depths"]
    result.add(
        f"active_queues() broadcast, {WORKERS} workers (median)",
        f"{inspect['active_queues_ms']} ms",
        f"active() in the same pass: {inspect['active_ms']} ms",
        "-",
        None,
    )
    commands = ", ".join(f"{k} {v}" for k, v in sorted(depths["commands"].items()))
    result.add(
        f"Redis queue depths, {depths['queues']} queues (median)",
        f"{depths['ms']} ms, {depths['round_trips']} round trip(s)",
        f"commands: {commands}",
        "-",
        None,
    )
    amqp = f["amqp_depths"]
    result.add(
        f"RabbitMQ queue depths, {len(QUEUES)} queues (median)",
        f"{amqp['ms']} ms, {amqp['round_trips']} round trip(s)" if isinstance(amqp, dict) else amqp,
        "passive queue_declare per queue",
        "-",
        None,
    )
    parse = f["memory_parse_us_per_record"]
    result.add(
        "Container Insights memory record parsed",
        ", ".join(f"{k} {v} us" for k, v in parse.items()),
        "per record; parsed from the same pages as the exit evidence",
        "-",
        None,
    )
    memory = f["memory_read"]
    stats = f["healthy_check_stats"]
    result.add(
        f"Container Insights group read, {memory['samples']} samples (median)",
        f"{memory['ms_moto']} ms, 1 log group",
        "moto server on 127.0.0.1: AWS adds its own latency (tens of ms)",
        "-",
        None,
    )
    result.add(
        f"healthy check with memory and queues on, {WORKERS} workers, {len(QUEUES)} queues",
        f"{f['healthy_check_ms']:.0f} ms (median)",
        f"memory samples {stats.get('memory_samples')}, queue depths {stats.get('queue_depths')}; "
        f"sources: {', '.join(f'{k} {v}' for k, v in f['healthy_check_sources'].items())}",
        "< 300 ms",
        f["healthy_check_ms"] < 300,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(measure(args.runs), indent=2, default=str))


if __name__ == "__main__":
    main()
