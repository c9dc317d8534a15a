"""One run end to end with fake sources: degraded sources, retries, read-only modes, secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from oomcheck.config.settings import Settings
from oomcheck.model import Kind, PidboxNames, SourceState, SourceStatus, StartedTask
from oomcheck.ports import Deps
from oomcheck.runner import PRESENCE_POLL_S, run_once, watch
from oomcheck.sources.inspector import CeleryInspector
from oomcheck.store.file import FileStateStore

SECRET = "s3cr3t-pa55"
W = "celery@w1"


class FakeInspect:
    def __init__(
        self, control: FakeControl, destination: list[str] | None, limit: int | None
    ) -> None:
        self.control, self.destination, self.limit = control, destination, limit

    def _reply(self, method: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        self.control.calls.append((method, self.destination, self.limit))
        names = [n for n in self.control.alive if self.destination is None or n in self.destination]
        if self.destination is None:
            names = [n for n in names if n not in self.control.miss_broadcast]
        out = {n: payload[n] for n in names if n in payload}
        return out or None

    def stats(self) -> dict[str, Any] | None:
        return self._reply("stats", self.control.stats)

    def active(self) -> dict[str, Any] | None:
        return self._reply("active", self.control.active)

    def registered(self, *_: str) -> dict[str, Any] | None:
        return self._reply("registered", self.control.registered)


@dataclass
class FakeControl:
    alive: list[str] = field(default_factory=list)
    miss_broadcast: set[str] = field(default_factory=set)
    stats: dict[str, Any] = field(default_factory=dict)
    active: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, list[str] | None, int | None]] = field(default_factory=list)

    def inspect(
        self, timeout: float, limit: int | None, destination: list[str] | None
    ) -> FakeInspect:
        return FakeInspect(self, destination, limit)

    def add(self, name: str, pid: int, tasks: list[dict[str, Any]] | None = None) -> None:
        self.alive.append(name)
        self.stats[name] = {
            "pid": pid,
            "uptime": 100,
            "pool": {
                "implementation": "celery.concurrency.prefork:TaskPool",
                "processes": [pid + 1],
            },
        }
        self.active[name] = tasks or []
        self.registered[name] = ["app.work [acks_late=False]"]


@dataclass
class FakeApp:
    control: FakeControl


@dataclass
class FakeScan:
    started: tuple[StartedTask, ...] = ()
    lost_failures: tuple[Any, ...] = ()
    keys_scanned: int = 0
    skipped_values: int = 0
    cursor: str | None = None


class FakeResults:
    def __init__(self) -> None:
        self.started: list[StartedTask] = []
        self.fail: Exception | None = None

    def scan(self, now: float, *, budget: int | None = None, cursor: str | None = None) -> FakeScan:
        if self.fail:
            raise self.fail
        return FakeScan(started=tuple(self.started), keys_scanned=len(self.started))

    def lookup(self, task_ids: list[str]) -> dict[str, str]:
        return {}


class FlakyPublisher:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def describe(self) -> str:
        return "fake"

    def publish(self, message: Any) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError(f"could not reach redis://:{SECRET}@host:6379 either")
        self.sent.append(message.subject)
        return "id"


class Clock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _deps(
    tmp_path, control: FakeControl, results: FakeResults, publisher: Any, clock: Clock
) -> Deps:
    settings = Settings(
        broker_url=f"redis://:{SECRET}@127.0.0.1:6379/0",
        result_backend=f"redis://:{SECRET}@127.0.0.1:6379/1",
        state_file=str(tmp_path / "state.json"),
    )
    return Deps(
        settings=settings,
        store=FileStateStore(settings.state_file),
        publisher=publisher,
        inspector=CeleryInspector("memory://", app=FakeApp(control), clock=clock),
        results=results,
        clock=clock,
    )


def _busy_worker() -> tuple[FakeControl, FakeResults, Clock]:
    """W alive, running task t1 (acked at start) on pool pid 11, with its STARTED record."""
    control, results, clock = FakeControl(), FakeResults(), Clock()
    task = {
        "id": "t1",
        "name": "app.work",
        "worker_pid": 11,
        "time_start": 1.0,
        "acknowledged": True,
    }
    control.add(W, 10, [task])
    results.started = [StartedTask("t1", W, 11, "app.work", clock.now - 5)]
    return control, results, clock


def _death_setup(tmp_path, failures: int = 0):
    control, results, clock = _busy_worker()
    publisher = FlakyPublisher(failures)
    deps = _deps(tmp_path, control, results, publisher, clock)
    assert run_once(deps).exit_code == 0
    control.alive.remove(W)
    clock.now += 60
    return deps, control, results, publisher, clock


def test_broadcast_miss_is_repinged_directly_before_counting_as_missing(tmp_path):
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    control.add("celery@w2", 20)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    run_once(deps)
    control.miss_broadcast.add(W)
    control.calls.clear()
    clock.now += 60
    report = run_once(deps)
    assert report.exit_code == 0
    assert {w["name"] for w in report.workers if w["status"] == "alive"} == {W, "celery@w2"}
    stats_calls = [c for c in control.calls if c[0] == "stats"]
    assert stats_calls == [("stats", None, 2), ("stats", [W], 1)]


def test_failed_publish_is_retried_next_run_and_never_dropped(tmp_path):
    deps, _, _, publisher, clock = _death_setup(tmp_path, failures=1)
    first = run_once(deps)
    assert [(a.kind, a.published) for a in first.alerts] == [("worker_lost", False)]
    assert first.sources["alerts"].failed
    clock.now += 60
    second = run_once(deps)
    assert [(a.kind, a.published) for a in second.alerts] == [("worker_lost", True)]
    clock.now += 60
    assert run_once(deps).alerts == ()
    assert len(publisher.sent) == 1


def test_secrets_never_reach_the_report(tmp_path):
    deps, _, results, _, _ = _death_setup(tmp_path, failures=1)
    results.fail = ConnectionError(f"Error connecting to redis://:{SECRET}@10.0.0.1:6379/1")
    report = run_once(deps)
    text = json.dumps(report.to_json(), default=str)
    assert SECRET not in text
    assert report.to_json()["sources"]["results"].startswith("error: ConnectionError")
    assert report.sources["inspect"] == SourceStatus(SourceState.OK)  # the rest went on


def test_state_busy_makes_the_run_read_only(tmp_path):
    deps, *_ = _death_setup(tmp_path)
    holder = FileStateStore(deps.settings.state_file)
    holder.acquire("someone-else", 0, 60)
    report = run_once(deps)
    assert report.sources["state"].state is SourceState.BUSY
    assert report.alerts == ()
    assert any(f.kind == Kind.WORKER_LOST for f in report.findings)


def test_audit_writes_nothing_and_alerts_nothing(tmp_path):
    deps, *_ = _death_setup(tmp_path)
    before = (tmp_path / "state.json").read_text()
    report = run_once(deps, "audit")
    assert report.alerts == ()
    assert (tmp_path / "state.json").read_text() == before
    body = report.to_json()
    assert body["mode"] == "audit" and "incidents" in body
    assert any(f.kind == Kind.WORKER_LOST for f in report.findings)


def test_unknown_mode_is_refused(tmp_path):
    deps, *_ = _death_setup(tmp_path)
    with pytest.raises(ValueError, match="unknown mode"):
        run_once(deps, "chekc")


def test_watch_is_bounded_by_duration(tmp_path):
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds

    reports = watch(deps, interval=5, duration=50, sleep=sleep, monotonic=lambda: fake_time[0])
    assert len(reports) == 10
    assert all(r.mode == "watch" for r in reports)


class SlowPublisher(FlakyPublisher):
    """Holds the lease holder inside its run long enough for the others to overlap it."""

    def __init__(self) -> None:
        super().__init__(0)

    def publish(self, message: Any) -> str:
        import time

        time.sleep(0.5)
        return super().publish(message)


class _AtomicCalls:
    """A boto3 client whose API calls run one at a time."""

    def __init__(self, client: Any) -> None:
        import threading

        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


def test_overlapping_runs_on_dynamodb_alert_once(tmp_path):
    import threading

    import boto3
    from moto import mock_aws

    from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition

    with mock_aws():
        # DynamoDB applies each request atomically; moto's in-process backend does not (FACTS.md),
        # so the runs' threads share a client that makes every call atomic, and they still race
        # between their calls as overlapping Lambda invocations do
        dynamo = _AtomicCalls(boto3.client("dynamodb", region_name="us-east-1"))
        dynamo.create_table(**table_definition("state"))
        control, results, clock = _busy_worker()
        publisher = SlowPublisher()
        runs = []
        for _ in range(3):
            deps = _deps(tmp_path, control, results, publisher, clock)
            deps.store = DynamoDBStateStore("state", client=dynamo)
            runs.append(deps)
        assert run_once(runs[0]).sources["state"] == SourceStatus(SourceState.OK)
        control.alive.remove(W)
        clock.now += 60
        barrier = threading.Barrier(3)
        reports = []

        def check(deps: Deps) -> None:
            barrier.wait()
            reports.append(run_once(deps))

        threads = [threading.Thread(target=check, args=(d,)) for d in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # every overlapping run saw the death; exactly one held the lease and alerted
        assert len(reports) == 3
        assert all(any(f.kind == Kind.WORKER_LOST for f in r.findings) for r in reports)
        assert sorted(r.sources["state"].state.value for r in reports) == ["busy", "busy", "ok"]
        assert len(publisher.sent) == 1
        # and the next run does not alert again
        clock.now += 60
        assert run_once(runs[1]).alerts == ()
        assert len(publisher.sent) == 1


def test_a_run_that_raises_gives_its_lease_back(tmp_path, monkeypatch):
    from oomcheck import runner

    deps, *_ = _death_setup(tmp_path)

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug in detection")

    monkeypatch.setattr(runner, "evaluate", broken)
    with pytest.raises(RuntimeError, match="a bug in detection"):
        run_once(deps)
    # another process can take the state at once: the crashed run did not keep it
    other = FileStateStore(deps.settings.state_file)
    other.acquire("someone-else", 0, 60)
    other.release("someone-else", other.load())


def test_the_lease_outlives_the_runs_deadline_by_seconds_not_minutes(tmp_path):
    import boto3
    from moto import mock_aws

    from oomcheck.deadline import Deadline
    from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition

    with mock_aws():
        # DynamoDB applies each request atomically; moto's in-process backend does not (FACTS.md),
        # so the runs' threads share a client that makes every call atomic, and they still race
        # between their calls as overlapping Lambda invocations do
        dynamo = _AtomicCalls(boto3.client("dynamodb", region_name="us-east-1"))
        dynamo.create_table(**table_definition("state"))
        control, results, clock = _busy_worker()
        deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
        deps.store = DynamoDBStateStore("state", client=dynamo)
        leases: list[float] = []

        def record(params: dict[str, Any], **_: Any) -> None:
            values = params.get("ExpressionAttributeValues", {})
            if ":until" in values:
                leases.append(float(values[":until"]["N"]))

        dynamo.meta.events.register("provide-client-params.dynamodb.UpdateItem", record)
        run_once(deps, "check", Deadline.after(29.0))
        assert deps.settings.lease_s == 90.0
        assert len(leases) == 1 and clock.now + 29 < leases[0] <= clock.now + 29 + 5


def test_a_run_with_no_time_left_saves_but_publishes_nothing(tmp_path):
    from oomcheck.deadline import Deadline

    deps, _, _, publisher, clock = _death_setup(tmp_path)
    deps.publish_s = 2.0  # one publish may take 2 s; the run has 1 s
    report = run_once(deps, "check", Deadline.after(1.0))
    assert [(a.kind, a.published) for a in report.alerts] == [("worker_lost", False)]
    assert "deadline" in report.sources["alerts"].detail and publisher.sent == []
    clock.now += 60
    assert [a.published for a in run_once(deps).alerts] == [True]


def test_watch_gives_each_check_the_invocations_deadline(tmp_path, monkeypatch):
    from oomcheck import runner
    from oomcheck.deadline import Deadline

    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]
    deps.monotonic = lambda: fake_time[0]
    seen: list[float] = []
    real = runner.run_once

    def spy(deps: Deps, mode: str, deadline: Deadline | None = None, **kwargs: Any) -> Any:
        assert deadline is not None
        seen.append(deadline.remaining())
        return real(deps, mode, deadline, **kwargs)

    monkeypatch.setattr(runner, "run_once", spy)

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds

    invocation = Deadline.after(20.0, deps.monotonic)
    watch(deps, interval=5, duration=15, sleep=sleep, deadline=invocation, run_timeout_s=8.0)
    # each check: at most its own timeout, and never past the invocation's deadline
    assert seen == [8.0, 8.0, 8.0]
    fake_time[0] = 0.0
    seen.clear()
    watch(deps, interval=5, duration=15, sleep=sleep, deadline=invocation, run_timeout_s=30.0)
    assert seen == [20.0, 15.0, 10.0]


class FakePresence:
    """The broker's pub/sub connection ids over time: one disappears at ``drop_at``."""

    def __init__(self, now: list[float], drop_at: float) -> None:
        self.now, self.drop_at = now, drop_at
        self.polls = 0

    def judge(self, members: Any) -> dict[str, Any]:
        return {}

    def shares(self, members: Any) -> dict[str, int]:
        return {}

    def pidbox_names(self) -> PidboxNames:
        return PidboxNames(frozenset())

    def describe(self) -> str:
        return "fake"

    def subscriptions(self) -> frozenset[str]:
        self.polls += 1
        return frozenset({"1"}) if self.now[0] >= self.drop_at else frozenset({"1", "2"})


def test_watch_checks_at_once_when_a_broker_subscription_closes(tmp_path):
    # Given a watch with a 30 s interval and a worker subscription that closes at t=7 s
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]
    deps.monotonic = lambda: fake_time[0]
    deps.presence = FakePresence(fake_time, drop_at=7.0)
    started: list[float] = []

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds

    # When it runs for 60 s
    reports = watch(
        deps,
        interval=30,
        duration=60,
        sleep=sleep,
        monotonic=lambda: fake_time[0],
        on_report=lambda r: started.append(fake_time[0]),
    )
    # Then the second check ran within a poll of the drop, not at t=30
    assert started[0] == 0.0
    assert 7.0 <= started[1] <= 7.0 + PRESENCE_POLL_S
    assert len(reports) >= 3
    assert deps.presence.polls >= 7


def test_watch_keeps_watching_the_broker_after_its_last_interval_check(tmp_path):
    # Given a 60 s watch checking every 5 s, and a subscription that closes at t=57.3 s, after
    # the last interval check (55 s)
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]
    deps.monotonic = lambda: fake_time[0]
    deps.presence = FakePresence(fake_time, drop_at=57.3)
    started: list[float] = []

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds

    watch(
        deps,
        interval=5,
        duration=60,
        sleep=sleep,
        monotonic=lambda: fake_time[0],
        on_report=lambda r: started.append(fake_time[0]),
    )
    # Then a check ran within a poll of the drop, in the same invocation
    assert started[:12] == [5.0 * i for i in range(12)]
    assert len(started) == 13
    assert 57.3 <= started[12] <= 57.3 + PRESENCE_POLL_S
    # and the watch stopped half a second before its end, as at every other check
    assert fake_time[0] <= 60.0


def test_watch_without_a_broker_to_poll_stops_after_its_last_check(tmp_path):
    # Given a broker that cannot list its subscriptions
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]
    deps.presence = None

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds

    reports = watch(deps, interval=5, duration=60, sleep=sleep, monotonic=lambda: fake_time[0])
    # Then it does not sleep out the rest of the minute (it would be billed for nothing)
    assert len(reports) == 12
    assert fake_time[0] == 55.0


def test_watch_polls_a_broker_at_the_pace_its_presence_asks_for(tmp_path):
    # Given a broker whose listing is dear (RabbitMQ's management API: once a second)
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(W, 10)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    fake_time = [0.0]
    deps.presence = FakePresence(fake_time, drop_at=1e9)
    deps.presence.poll_s = 1.0

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds

    # When a watch waits 10 s between its two checks
    watch(deps, interval=10, duration=11, sleep=sleep, monotonic=lambda: fake_time[0])
    # Then the broker was asked about once a second (10 polls, and a few around the checks),
    # not every 0.2 s (over 50)
    assert 10 <= deps.presence.polls <= 16
