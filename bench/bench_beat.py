"""Cost per run of the beat source: RedBeat's schedule with 1,000 entries, read from Redis.

    python -m bench --only beat

Figures (medians): the read of 1,000 entries (round trips counted by the reader, commands by the
server's commandstats) beside a bare PING round trip on the same connection; and a healthy check
(2 solo workers) with the beat source on beside the same check with it off, in the same run.
The entries are written by celery-redbeat itself (a dev dependency), each with a last run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery

from bench.common import Result, progress
from oomcheck.config.settings import Settings
from oomcheck.demo import services
from oomcheck.demo.workers import WorkerProcess
from oomcheck.runner import run_once
from oomcheck.sources.beat import RedBeatSource
from oomcheck.wiring import build_deps

ENTRIES = 1000
PREFIX = "redbeat:"


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def write_schedule(url: str, entries: int) -> None:
    """``entries`` interval entries (1 min to 1 day), each last run a little while ago."""
    from celery.schedules import schedule
    from redbeat import RedBeatSchedulerEntry

    app = Celery("bench-beat", broker=url, set_as_current=False)
    app.conf.redbeat_redis_url = url
    app.conf.redbeat_key_prefix = PREFIX
    now = datetime.now(UTC)
    for i in range(entries):
        every = timedelta(seconds=60 * (1 + i % 1440))
        entry = RedBeatSchedulerEntry(f"entry-{i:04d}", "app.nothing", schedule(every), app=app)
        entry.save()
        entry.reschedule(last_run_at=now - timedelta(seconds=i % 60))
    app.redbeat_redis.close()


def commandstats(client: Any) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in client.info("commandstats").items()}


def read_figures(url: str, runs: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    source = RedBeatSource(client, key_prefix=PREFIX)
    source.read(time.time())  # connect outside the measurement
    before = commandstats(client)
    read = source.read(time.time())
    after = commandstats(client)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta["cmdstat_info"] = delta.get("cmdstat_info", 0) - 1  # our own INFO between the two
    figures = {
        "entries": len(read.entries),
        "round_trips": read.round_trips,
        "commands": {k.removeprefix("cmdstat_"): v for k, v in delta.items() if v > 0},
        "ms": round(median_ms(lambda: source.read(time.time()), runs), 2),
        "ping_ms": round(median_ms(client.ping, runs), 3),
    }
    client.close()
    return figures


def check_figures(broker: str, backend: str, runs: int) -> dict[str, float]:
    """A healthy check's median time with the beat source off, then on (same workers)."""
    out: dict[str, float] = {}
    workers: list[WorkerProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(broker_url=broker, result_backend=backend, state_file=f"{tmp}/state.json")
        off = build_deps(base)
        on = build_deps(base.with_overrides(beat_scheduler="redbeat.RedBeatScheduler"))
        try:
            for i in range(2):
                workers.append(
                    WorkerProcess(f"celery@bench-beat-{i}", broker, backend, pool="solo")
                )
                workers[-1].start()
            for worker in workers:
                worker.wait_ready(off.inspector.app.control)  # type: ignore[union-attr]
            for name, deps in (("off", off), ("on", on)):
                run_once(deps, "check")  # first run: discovery waits the full inspect timeout
                reports = [run_once(deps, "check") for _ in range(runs)]
                assert all(not r.findings for r in reports), reports[-1].findings
                out[name] = statistics.median(r.duration_ms for r in reports)
                if name == "on":
                    out["entries_in_report"] = len(reports[-1].schedule or ())
        finally:
            for worker in workers:
                worker.stop()
            for deps in (off, on):
                if deps.inspector is not None:
                    deps.inspector.close()
    return out


def measure(runs: int, entries: int = ENTRIES) -> dict[str, Any]:
    server = services.start_redis()
    base = f"redis://127.0.0.1:{server.port}"
    try:
        write_schedule(f"{base}/0", entries)
        return {
            "read": read_figures(f"{base}/0", runs),
            "check": check_figures(f"{base}/0", f"{base}/1", min(runs, 10)),
        }
    finally:
        server.stop()


def run(quick: bool = False) -> Result:
    """The rows of ``python -m bench --only beat``."""
    runs = 10 if quick else 30
    progress(f"beat: {ENTRIES} RedBeat entries, {runs} runs per figure")
    f = measure(runs)
    read, check = f["read"], f["check"]
    commands = ", ".join(f"{k} {v}" for k, v in sorted(read["commands"].items()))
    result = Result("beat", tag="B")
    result.add(
        f"RedBeat schedule read, {read['entries']:,} entries (median)",
        f"{read['ms']} ms, {read['round_trips']} round trips",
        f"PING {read['ping_ms']} ms; commands: {commands}",
        "<= 3 round trips",
        read["round_trips"] <= 3 and read["entries"] == ENTRIES,
    )
    result.add(
        f"healthy check, 2 workers, beat source on ({ENTRIES:,} entries; median)",
        f"{check['on']:.0f} ms",
        f"beat source off, same run: {check['off']:.0f} ms",
        "-",
        None,
    )
    result.facts["beat_read_ms"] = read["ms"]
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(10), indent=2, default=str))
