"""Detection latency: the kernel's OOM kill -> the SNS publish accepted.

Each kill gets a fresh worker (prefork, concurrency 1) in a fresh 200 MiB memory cgroup, watched
by the demo's Supervisor (it plays the container runtime: on the OOM kill it stops the whole
"container" and writes the ECS task-stopped event to the log group oomcheck reads). A task that
allocates 600 MiB makes the kernel kill it. The kill instant is when the cgroup's ``oom_kill``
counter rises (polled every 10 ms); the alert instant is when SNS (a moto server) accepted the
publish, recorded by the demo's TimedPublisher. State lives in DynamoDB, exit evidence in
CloudWatch Logs, both on the moto server, as deployed.

(a) watch: runner.watch itself, interval 5 s (the Lambda default); the kill lands at a random
    phase of the interval.
(b) scheduled: a check at each tick of a fixed period; the kill lands at a random phase of it.
    The deployed period is 60 s; five kills at 60 s would take most of the time budget, so the
    measured period is shorter (15 s) and the 60 s figures are derived from the measured
    detection times (latency = wait for the next tick + the detecting run).
Without a writable memory cgroup the worker is SIGKILLed instead, and the table says so.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    Result,
    median,
    moto_server,
    ms,
    percentile,
    private_redis,
    progress,
)

WATCH_INTERVAL_S = 5.0
DEPLOYED_PERIOD_S = 60.0
DEPLOYED_WATCH_S = 60.0  # template.yaml WatchSeconds as the README recommends
KILL_POLL_S = 0.01
BEFORE_POLL_S = 1.0  # runner.PRESENCE_POLL_S before the floor work
TABLE = "oomcheck-bench-latency"
TOPIC = "oomcheck-bench-latency-alerts"


class Stopped(Exception):
    """Raised from the watch loop's sleep to end it early (the loop is runner.watch itself)."""


class Ticks:
    """Wraps deps.clock: run_once reads it once, at its start, so every call is a check's start."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        now = time.time()
        with self.lock:
            self.starts.append(now)
        return now

    def last_before(self, at: float) -> float | None:
        with self.lock:
            earlier = [t for t in self.starts if t <= at]
        return earlier[-1] if earlier else None

    def first_after(self, at: float) -> float | None:
        with self.lock:
            later = [t for t in self.starts if t > at]
        return later[0] if later else None


class KillWatch:
    """The kernel's kill instant: the cgroup's oom_kill counter, polled every 10 ms."""

    def __init__(self, cgroup: Any) -> None:
        self.cgroup = cgroup
        self.at: float | None = None
        self._stop = threading.Event()
        self._baseline = cgroup.oom_kills()
        self._thread = threading.Thread(target=self._poll, name="killwatch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.cgroup.oom_kills() > self._baseline:
                self.at = time.time()
                return
            time.sleep(KILL_POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Sample:
    mode: str
    latency_s: float
    wait_s: float  # kill -> start of the check that published the alert
    detect_s: float  # that check's start -> publish accepted
    phase_s: float  # kill - start of the previous check
    cause: str
    real_oom: bool
    pool: str = "prefork"
    # an inspect-ping loop (one ping a second) beside the checker: kill -> first missed ping;
    # negative when the worker stopped answering before it died (a busy solo worker)
    ping_s: float | None = None


class PingLoop:
    """The reference every peer uses: ping the worker once a second; it is "dead" at the first
    ping it misses. Records each miss."""

    def __init__(self, control: Any, name: str) -> None:
        self.control, self.name = control, name
        self.misses: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pingloop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.time()
            reply = self.control.ping(destination=[self.name], timeout=1.0, limit=1) or []
            if not any(self.name in r for r in reply):
                self.misses.append(started)
            self._stop.wait(max(0.0, 1.0 - (time.time() - started)))

    def first_miss_after(self, at: float) -> float | None:
        """The first miss after ``at``, or (negative) how long it had been missing already."""
        before = [m for m in self.misses if m <= at]
        if before and before[-1] >= at - 1.5:
            run_start = before[-1]
            for m in reversed(before):
                if m < run_start - 1.5:
                    break
                run_start = m
            return run_start - at
        after = [m for m in self.misses if m > at]
        return after[0] - at if after else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Loop:
    """The checking loop in a thread: runner.watch, or one check per scheduler tick."""

    def __init__(self, deps: Any, mode: str, period: float) -> None:
        self.deps, self.mode, self.period = deps, mode, period
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"loop-{mode}", daemon=True)

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopped

    def _run(self) -> None:
        from oomcheck.runner import run_once, watch

        try:
            if self.mode == "watch":
                watch(self.deps, interval=self.period, duration=600, sleep=self._sleep)
                return
            start = time.monotonic()
            for tick in range(int(600 / self.period)):
                self._sleep(max(0.0, start + tick * self.period - time.monotonic()))
                run_once(self.deps, "check")
        except Stopped:
            return
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        # a check in progress finishes first (bounded by the inspect and re-ping timeouts)
        self.thread.join(timeout=30)


@contextlib.contextmanager
def floor_off() -> Iterator[None]:
    """The watch path as it was before the floor work, for the "before" figures of the same
    run: presence polled every second, and the check after a closed subscription asks the
    broadcast for every roster worker's reply (so it waits the inspect timeout for the dead)."""
    from oomcheck import runner

    poll, suspects = runner.PRESENCE_POLL_S, runner.suspects
    runner.PRESENCE_POLL_S = BEFORE_POLL_S
    runner.suspects = lambda *_, **__: ()  # type: ignore[assignment]
    try:
        yield
    finally:
        runner.PRESENCE_POLL_S, runner.suspects = poll, suspects


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


@dataclass
class Env:
    broker: str
    backend: str
    deps: Any
    ticks: Ticks
    publisher: Any
    logs: Any
    sender: Any
    workdir: Path
    real_oom: bool


def _one_kill(  # noqa: PLR0917 - one kill's parameters
    env: Env, mode: str, period: float, index: int, phase: float, pool: str = "prefork"
) -> Sample:
    from oomcheck.demo.run import HOG_MB, LIMIT_MB, Supervisor
    from oomcheck.demo.workers import MemoryCgroup, WorkerProcess
    from oomcheck.model import Action
    from oomcheck.runner import run_once

    name = f"{mode[0]}{pool[0]}{index}@ip-127-0-0-1"
    cgroup = MemoryCgroup.create(LIMIT_MB * 1024 * 1024, group_kill=True) if env.real_oom else None
    worker = WorkerProcess(
        name,
        env.broker,
        env.backend,
        pool=pool,
        cgroup=cgroup,
        log_path=str(env.workdir / f"{name}.log"),
    )
    supervisor = None
    killwatch = None
    pings = None
    try:
        worker.start()
        worker.wait_ready(env.deps.inspector.app.control, timeout=60)
        # The roster must know the worker: with every earlier worker lost, this run discovers.
        _wait(
            lambda: any(
                w["name"] == name and w["status"] == "alive"
                for w in run_once(env.deps, mode).workers
            ),
            20,
            f"{name} in the roster",
        )
        supervisor = Supervisor(worker, cgroup, env.logs).start()
        pings = PingLoop(env.deps.inspector.app.control, name)
        if cgroup is not None:
            killwatch = KillWatch(cgroup)
        else:
            task = env.sender.send_task("demo.sleepy", args=[120])
            results = env.deps.results
            _wait(
                lambda: any(t.id == task.id for t in results.scan(time.time()).started),
                20,
                "the task to start",
            )
        published_before = len(env.publisher.accepted)
        loop_start = time.time()
        with Loop(env.deps, mode, period) as loop:
            first_tick = _wait(lambda: env.ticks.first_after(loop_start), 10, "the first tick")
            fire_at = first_tick + phase
            time.sleep(max(0.0, fire_at - time.time()))
            if killwatch is not None:
                env.sender.send_task("demo.hog", args=[HOG_MB, 60])
                kill_at = _wait(lambda: killwatch.at, 30, "the kernel's OOM kill")
            else:
                kill_at = time.time()
                worker.kill(signal.SIGKILL)

            def alert() -> tuple[float, Any] | None:
                for at, message in env.publisher.accepted[published_before:]:
                    worker_name = message.payload.get("finding", {}).get("worker")
                    if message.action == Action.OPEN and worker_name == name:
                        return at, message
                return None

            published_at, message = _wait(alert, period + 40, f"the alert for {name}")
            if loop.error is not None:
                raise RuntimeError(f"check loop failed: {loop.error!r}")
    finally:
        if pings is not None:
            pings.stop()
        if killwatch is not None:
            killwatch.stop()
        if supervisor is not None:
            supervisor.stop()
        worker.stop()
        if cgroup is not None:
            cgroup.remove()
    # the check that published the alert, and the one before the kill
    seen = env.ticks.last_before(published_at) or published_at
    previous = env.ticks.last_before(kill_at) or kill_at
    return Sample(
        mode=mode,
        latency_s=published_at - kill_at,
        wait_s=seen - kill_at,
        detect_s=published_at - seen,
        phase_s=kill_at - previous,
        cause=str(message.payload.get("finding", {}).get("cause")),
        real_oom=cgroup is not None,
        pool=pool,
        ping_s=pings.first_miss_after(kill_at) if pings is not None else None,
    )


def _series(  # noqa: PLR0917 - one series' parameters
    env: Env, mode: str, period: float, kills: int, rng: random.Random, pool: str = "prefork"
) -> list[Sample]:
    # Stratified random phases: one uniform draw in each 1/kills slice of the period, in random
    # order, so that a handful of kills covers the whole period rather than clumping by chance.
    phases = [period * (k + rng.random()) / kills for k in range(kills)]
    rng.shuffle(phases)
    samples = []
    for index, phase in enumerate(phases):
        sample = _one_kill(env, mode, period, index, phase, pool)
        samples.append(sample)
        progress(
            f"latency: {mode} {pool} kill {index + 1}/{kills}: {sample.latency_s:.2f} s "
            f"(phase {sample.phase_s:.2f} s, wait {sample.wait_s:.2f} s, detecting check "
            f"{sample.detect_s:.2f} s, cause {sample.cause})"
        )
    return samples


def derived(detects: list[float], checks: list[float], cycle: float) -> list[float]:
    """Latencies for kills spread evenly over a cycle: the wait for the next check (``checks``
    are the check start times within one cycle; the next cycle's first check closes it) plus
    each measured detecting-check time."""
    out = []
    steps = 600
    for step in range(steps):
        t = cycle * step / steps
        upcoming = [c for c in (*checks, cycle + checks[0]) if c >= t]
        wait = min(upcoming) - t
        out += [wait + d for d in detects]
    return out


def watch_check_times(
    duration: float = DEPLOYED_WATCH_S, *, polls: bool = False, check_s: float = 0.05
) -> tuple[list[float], float]:
    """When runner.watch starts its checks within one deployed minute (WatchSeconds 60,
    interval 5), and when it returns: watch() itself, replayed on a fake clock with a stand-in
    for run_once (it is looked up in the runner module at call time) taking ``check_s``, so the
    figures follow watch()'s stop rule. ``polls``: a broker whose subscriptions watch() can poll
    between checks (Redis), which it then also watches after its last interval check."""
    from oomcheck import runner

    fake = [0.0]
    starts: list[float] = []

    def fake_run(deps: Any, mode: str, deadline: Any = None, **_: Any) -> None:
        starts.append(fake[0])
        fake[0] += check_s

    def fake_sleep(seconds: float) -> None:
        fake[0] += seconds

    presence = SimpleNamespace(subscriptions=lambda: frozenset({"a worker"})) if polls else None
    real = runner.run_once
    runner.run_once = fake_run  # type: ignore[assignment]
    try:
        runner.watch(
            SimpleNamespace(presence=presence),  # type: ignore[arg-type]
            interval=WATCH_INTERVAL_S,
            duration=duration,
            sleep=fake_sleep,
            monotonic=lambda: fake[0],
        )
    finally:
        runner.run_once = real
    return starts, fake[0]


def derived_watch(
    woken: list[float], first: list[float], watched_until: float, cycle: float
) -> list[float]:
    """Latencies for kills spread evenly over a deployed minute of a watch that polls the
    broker: a kill while it watches is alerted as the measured watch-mode kills were
    (``woken``: kill -> publish, poll and check included); a kill after it stops waits for the
    next invocation, whose first check finds it as a plain check does (``first``)."""
    out = []
    steps = 600
    for step in range(steps):
        t = cycle * step / steps
        if t < watched_until:
            out += woken
        else:
            out += [cycle - t + d for d in first]
    return out


def _ping_reference(series: list[Sample]) -> str:
    pings = [s.ping_s for s in series if s.ping_s is not None]
    early = [p for p in pings if p < 0]
    if early:
        return (
            f"ping loop (1/s): missing {-median(early):.1f} s BEFORE the kill in "
            f"{len(early)}/{len(pings)} (busy, not dead)"
        )
    return f"ping loop (1/s) notices p50 {median(pings):.2f} s" if pings else "ping: none"


def _presence_rows(result: Result, samples: dict[str, list[Sample]], how: str) -> None:
    for pool, key in (("prefork", "watch"), ("solo", "watch-solo")):
        series = samples[key]
        lat = [s.latency_s for s in series]
        old = [s.latency_s for s in samples.get(f"{key}-before", [])]
        before = (
            f"before (poll 1 s, every reply awaited): p50 {median(old):.2f} s, p95 "
            f"{percentile(old, 95):.2f} s ({len(old)} kills); "
            if old
            else ""
        )
        result.add(
            f"watch + broker presence, {pool} worker: {how} -> SNS publish ({len(lat)} kills)",
            f"p50 {median(lat):.2f} s, p95 {percentile(lat, 95):.2f} s",
            before + _ping_reference(series),
            "p95 <= 1.0 s, p50 <= 0.6 s",
            percentile(lat, 95) <= 1.0 and median(lat) <= 0.6,
        )
    # the checks that started after the kill (a check already running when the kill came waits
    # for the dead worker's reply like any check that has no hint)
    woken = [s.detect_s for s in samples["watch"] + samples["watch-solo"] if s.wait_s >= 0]
    woken_before = [
        s.detect_s
        for s in samples.get("watch-before", []) + samples.get("watch-solo-before", [])
        if s.wait_s >= 0
    ]
    result.add(
        f"detecting check after a closed subscription (watch): check start -> SNS publish "
        f"({len(woken)} checks)",
        f"p50 {ms(median(woken))}, p95 {ms(percentile(woken, 95))}, max {ms(max(woken))}",
        f"before: p50 {ms(median(woken_before))}, max {ms(max(woken_before))}"
        if woken_before
        else "(no before series)",
        "<= 300 ms",
        percentile(woken, 95) <= 0.3,
    )
    after = [s.detect_s for s in samples["scheduled"]]
    before = [s.detect_s for s in samples["before"]]
    result.add(
        "detecting scheduled check (a worker has just died, no hint), with broker presence",
        f"p50 {ms(median(after))}, max {ms(max(after))}",
        f"before (presence off, re-ping): p50 {ms(median(before))} ({len(before)} kills)",
        "<= 1.5 s",
        percentile(after, 95) <= 1.5,
    )


def run(quick: bool = False) -> Result:
    from oomcheck.demo.run import LOG_GROUP, TimedPublisher
    from oomcheck.demo.workers import memory_cgroup_available

    result = Result("latency")
    watch_kills = 3 if quick else 10
    sched_kills = 2 if quick else 5
    sched_period = 10.0 if quick else 15.0
    before_kills = 2 if quick else 3
    rng = random.Random(20240517)
    real_oom, why = memory_cgroup_available()
    workdir = Path(tempfile.mkdtemp(prefix="oomcheck-bench-latency-"))
    samples: dict[str, list[Sample]] = {}
    deps = None
    sender = None
    try:
        with private_redis() as base, moto_server():
            from celery import Celery

            from oomcheck.aws import client
            from oomcheck.config.settings import Settings
            from oomcheck.provision import setup
            from oomcheck.wiring import build_deps

            broker, backend = f"{base}/1", f"{base}/2"
            topic_arn = setup(TABLE, TOPIC).topic_arn
            logs = client("logs")
            logs.create_log_group(logGroupName=LOG_GROUP)
            # The deployed defaults: inspect timeout 1 s, re-ping 2 s, discovery every 300 s.
            settings = Settings(
                broker_url=broker,
                result_backend=backend,
                table=TABLE,
                topic_arn=topic_arn,
                log_groups=(LOG_GROUP,),
            )
            deps = build_deps(settings)
            publisher = TimedPublisher(deps.publisher)
            deps.publisher = publisher
            ticks = Ticks()
            deps.clock = ticks
            sender = Celery("bench-sender", broker=broker, backend=backend, set_as_current=False)
            env = Env(broker, backend, deps, ticks, publisher, logs, sender, workdir, real_oom)
            kind = "real OOM kills (memory cgroup)" if real_oom else f"SIGKILL: {why}"
            progress(
                f"latency: {kind}; watch {watch_kills} kills, scheduled {sched_kills} kills "
                f"at {sched_period:.0f} s"
            )
            samples["watch"] = _series(env, "watch", WATCH_INTERVAL_S, watch_kills, rng)
            samples["watch-solo"] = _series(
                env, "watch", WATCH_INTERVAL_S, watch_kills, rng, pool="solo"
            )
            # the same kills with the watch path as it was: figures of the same run, under the
            # same load
            with floor_off():
                for pool, key in (("prefork", "watch-before"), ("solo", "watch-solo-before")):
                    samples[key] = _series(env, "watch", WATCH_INTERVAL_S, watch_kills, rng, pool)
            samples["scheduled"] = _series(env, "check", sched_period, sched_kills, rng)
            # before broker presence: the same detecting check without it (re-ping wait)
            presence, deps.presence = deps.presence, None
            try:
                samples["before"] = _series(env, "check", sched_period, before_kills, rng)
            finally:
                deps.presence = presence
    finally:
        if sender is not None:
            sender.close()
        if deps is not None and deps.inspector is not None:
            deps.inspector.close()
        shutil.rmtree(workdir, ignore_errors=True)

    how = "kernel OOM kill" if real_oom else f"SIGKILL (no memory cgroup: {why})"
    watch_s = samples["watch"]
    lat = [s.latency_s for s in watch_s]
    result.add(
        f"watch mode, interval 5 s: {how} -> SNS publish ({len(lat)} kills, random phases)",
        f"p50 {median(lat):.2f} s, p95 {percentile(lat, 95):.2f} s",
        f"wait for next check p50 {median([s.wait_s for s in watch_s]):.2f} s; detecting check "
        f"p50 {median([s.detect_s for s in watch_s]):.2f} s",
        "p95 <= 10 s",
        percentile(lat, 95) <= 10.0,
    )
    _presence_rows(result, samples, how)
    sched = samples["scheduled"]
    lat_s = [s.latency_s for s in sched]
    result.add(
        f"scheduled, period {sched_period:.0f} s (shortened from 60 s): {how} -> SNS publish "
        f"({len(lat_s)} kills)",
        f"p50 {median(lat_s):.2f} s, p95 {percentile(lat_s, 95):.2f} s",
        f"latency minus wait for the tick: p50 {median([s.detect_s for s in sched]):.2f} s, "
        f"max {max(s.detect_s for s in sched):.2f} s",
        f"<= period + 10 s = {sched_period + 10:.0f} s",
        max(lat_s) <= sched_period + 10.0,
    )
    detects = [s.detect_s for s in watch_s + sched]
    at_60 = derived(detects, [0.0], DEPLOYED_PERIOD_S)
    result.add(
        "scheduled as deployed, rate(1 minute) (derived: kills spread over the minute x "
        "measured detecting checks)",
        f"p50 {median(at_60):.1f} s, p95 {percentile(at_60, 95):.1f} s, max {max(at_60):.1f} s",
        f"{len(detects)} measured detecting checks, max {max(detects):.2f} s",
        "<= 60 + 10 s",
        max(at_60) <= DEPLOYED_PERIOD_S + 10.0,
    )
    plain = [s.detect_s for s in sched]
    _, watched = watch_check_times(polls=True, check_s=median(plain))
    in_minute = derived_watch(lat, plain, watched, DEPLOYED_PERIOD_S)
    # the same without the broker's subscriptions to poll (RabbitMQ): interval checks only
    checks, _ = watch_check_times()
    blind = derived(detects, checks, DEPLOYED_PERIOD_S)
    result.add(
        "watch as deployed: rate(1 minute) + WatchSeconds 60 on Redis (derived: kills spread "
        "over the minute x the measured watch-mode kills)",
        f"p50 {median(in_minute):.2f} s, p95 {percentile(in_minute, 95):.2f} s, "
        f"max {max(in_minute):.1f} s",
        f"the broker watched until {watched:.1f} s of each minute; without subscriptions to "
        f"poll (checks at {checks[0]:.0f}..{checks[-1]:.0f} s only): p95 "
        f"{percentile(blind, 95):.1f} s",
        "p95 <= 10 s",
        percentile(in_minute, 95) <= 10.0,
    )
    killed = "the cgroup's oom_kill counter rising (10 ms poll)" if real_oom else "SIGKILL sent"
    causes = sorted({s.cause for s in watch_s + sched})
    counts = ", ".join(f"{c} {sum(1 for s in watch_s + sched if s.cause == c)}" for c in causes)
    result.notes.append(
        f"latency: kill instant = {killed}; "
        f"alert instant = SNS publish returned (moto server). Cause in the first alert: {counts}"
        + (
            " (unknown: the detecting check ran before the supervisor's ECS event reached the "
            "log group; the alert is not held back for it)"
            if any(s.cause == "unknown" for s in watch_s + sched)
            else ""
        )
        + ". Watch mode looks at the broker's pub/sub connections every 0.2 s between checks "
        "and checks at once when one closes; that check asks the broker first and leaves the "
        "workers whose connections are gone out of the broadcast's reply count, so it does not "
        "wait the inspect timeout (1 s) for them. A check with no such hint (scheduled, or one "
        "already running when the kill came) still waits it; the broker's word then replaces "
        "the direct re-ping (2 s)."
    )
    result.facts["detect_s"] = detects
    return result


if __name__ == "__main__":
    import sys

    from bench.common import render_table

    print(render_table([run("--quick" in sys.argv)], "bench_latency"))
