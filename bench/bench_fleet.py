"""Fleet size: 1,000 and 5,000 workers through a fake remote control, state on DynamoDB (moto).

The remote control answers the way Celery's does (stats with prefork pools of 4-8 children, a
few active tasks each, ~20 registered task names with their limits), instantly: what is measured
is oomcheck's own work per run (parsing replies, evaluate(), encoding and diffing the state,
DynamoDB requests), not a broker. DynamoDB is moto in-process (``mock_aws``): its request
counts and sizes are exact, its latency is not AWS's.

Steady-state runs, each 60 s of fake clock after the previous one:
  first      every worker new (discovery): the whole roster is written once;
  unchanged  nothing changed: DynamoDB writes should be the lease only;
  1% busy    1% of the workers finished one task and started another;
  10 died    ten workers stopped answering with tasks on them: ten incidents, opened together
             and the same way, so one message (issue 12's grouping) that must name every worker
             and every task that was on them.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.common import (
    LAMBDA_CPU_FACTOR,
    CountingPublisher,
    DynamoMeter,
    Phases,
    Result,
    item_size,
    median,
    ms,
    progress,
)

TASK_NAMES = tuple(
    f"app.tasks.{verb}_{noun}"
    for verb in ("render", "export", "sync", "notify")
    for noun in ("report", "invoice", "catalog", "user", "thumbnail")
)
DYNAMO_ITEM_LIMIT = 400 * 1024
TX_BYTES_LIMIT = 4 * 1024 * 1024
TX_ACTIONS_LIMIT = 100


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeWorker:
    name: str
    pid: int
    boot_at: float
    pool_pids: list[int]
    tasks: list[dict[str, Any]]
    registered: list[str]


class FleetInspect:
    """One ``app.control.inspect(...)`` of the fleet: honours destination and limit like Celery's
    (a destination list only reaches those workers; a dead worker never answers)."""

    def __init__(self, fleet: FleetControl, destination: list[str] | None, limit: int | None):
        self.fleet, self.destination, self.limit = fleet, destination, limit

    def _names(self) -> list[str]:
        if self.destination is None:
            names = [n for n in self.fleet.workers if n in self.fleet.alive]
        else:
            names = [n for n in self.destination if n in self.fleet.alive]
        return names[: self.limit] if self.limit else names

    def stats(self) -> dict[str, Any] | None:
        return {n: self.fleet.stats_of(n) for n in self._names()} or None

    def active(self) -> dict[str, Any] | None:
        return {n: list(self.fleet.workers[n].tasks) for n in self._names()} or None

    def registered(self, *_: str) -> dict[str, Any] | None:
        return {n: list(self.fleet.workers[n].registered) for n in self._names()} or None


class FleetControl:
    """The ``control`` of a fake Celery app: N prefork workers with tasks. Adapted from the
    unit tests' FakeControl, with replies shaped like real ones."""

    def __init__(self, size: int, clock: FakeClock, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.workers: dict[str, FakeWorker] = {}
        for i in range(size):
            name = f"celery@ip-10-{i // 62500}-{(i // 250) % 250}-{i % 250}.ec2.internal"
            pid = 100 + i * 16
            pool = [pid + 1 + k for k in range(self.rng.randint(4, 8))]
            worker = FakeWorker(
                name=name,
                pid=pid,
                boot_at=clock.now - self.rng.uniform(3600, 86400),
                pool_pids=pool,
                tasks=[],
                registered=self._registered(),
            )
            for child in self.rng.sample(pool, self.rng.randint(0, 3)):
                worker.tasks.append(self.new_task(worker, child))
            self.workers[name] = worker
        self.alive: set[str] = set(self.workers)

    def _registered(self) -> list[str]:
        out = []
        for name in TASK_NAMES:
            limit = self.rng.choice((1800, 3600, 7200))
            late = self.rng.random() < 0.5
            out.append(
                f"{name} [time_limit={limit} soft_time_limit={limit - 60} acks_late={late}"
                + (" reject_on_worker_lost=True]" if late and self.rng.random() < 0.3 else "]")
            )
        return out

    def new_task(self, worker: FakeWorker, child: int) -> dict[str, Any]:
        name = self.rng.choice(TASK_NAMES)
        return {
            "id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "name": name,
            "args": [self.rng.randint(1, 10**6), "eu-west-1"],
            "kwargs": {"tenant": f"acme-{self.rng.randint(1, 97)}", "force": False},
            "type": name,
            "hostname": worker.name,
            "time_start": self.clock.now - self.rng.uniform(1, 120),
            "acknowledged": True,
            "delivery_info": {
                "exchange": "",
                "routing_key": "celery",
                "priority": 0,
                "redelivered": False,
            },
            "worker_pid": child,
        }

    def stats_of(self, name: str) -> dict[str, Any]:
        w = self.workers[name]
        return {
            "broker": {
                "hostname": "10.0.0.5",
                "port": 6379,
                "transport": "redis",
                "virtual_host": "0",
            },
            "clock": "1234",
            "pid": w.pid,
            "pool": {
                "implementation": "celery.concurrency.prefork:TaskPool",
                "max-concurrency": len(w.pool_pids),
                "max-tasks-per-child": "N/A",
                "processes": list(w.pool_pids),
                "put-guarded-by-semaphore": False,
                "timeouts": [0, 0],
                "writes": {"all": "", "avg": "0.00%", "inqueues": {"active": 0, "total": 4}},
            },
            "prefetch_count": len(w.pool_pids),
            "rusage": {"maxrss": 123456, "utime": 12.3, "stime": 1.2, "nvcsw": 1000},
            "total": dict.fromkeys(TASK_NAMES[:5], 10),
            "uptime": int(self.clock.now - w.boot_at),
        }

    def inspect(
        self, timeout: float = 1.0, limit: int | None = None, destination: list[str] | None = None
    ) -> FleetInspect:
        del timeout  # replies are instant: a broker is not what this benchmark measures
        return FleetInspect(self, destination, limit)


@dataclass
class FakeApp:
    control: FleetControl

    def close(self) -> None:
        pass


@dataclass
class FakeScan:
    started: tuple[Any, ...]
    lost_failures: tuple[Any, ...] = ()
    keys_scanned: int = 0
    skipped_values: int = 0
    cursor: str | None = None


class FleetResults:
    """The result backend's STARTED records of every active task (what the Redis scan returns)."""

    def __init__(self, fleet: FleetControl) -> None:
        self.fleet = fleet

    def scan(self, now: float, *, budget: int | None = None, cursor: str | None = None) -> FakeScan:
        from oomcheck.model import StartedTask

        del now, budget, cursor
        started = tuple(
            StartedTask(t["id"], w.name, t["worker_pid"], t["name"], t["time_start"])
            for w in self.fleet.workers.values()
            for t in w.tasks
        )
        # a backend keeps finished results too: say 20 per worker, all scanned
        return FakeScan(started=started, keys_scanned=20 * len(self.fleet.workers) + len(started))

    def lookup(self, task_ids: list[str]) -> dict[str, str]:
        running = {t["id"] for w in self.fleet.workers.values() for t in w.tasks}
        return {i: "STARTED" for i in task_ids if i in running}


class FleetBroker:
    """Unacked messages of the acks_late half of the active tasks."""

    def __init__(self, fleet: FleetControl) -> None:
        self.fleet = fleet

    def unacked(self, now: float) -> tuple[Any, ...]:
        from oomcheck.model import UnackedMessage

        return tuple(
            UnackedMessage(t["id"], t["name"], f"tag-{t['id'][:8]}", t["time_start"])
            for w in self.fleet.workers.values()
            for t in w.tasks
            if int(t["id"][0], 16) % 2 == 0
        )


class MotoTime:
    """Time spent inside moto's in-process DynamoDB (request parsing, the backend, response
    serialization): a test double's cost, reported apart from oomcheck's own."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def installed(self) -> Iterator[None]:
        from moto.core.botocore_stubber import BotocoreStubber

        real = BotocoreStubber.process_request
        meter = self

        def process_request(stub: Any, request: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(stub, request)
            finally:
                meter.seconds += time.perf_counter() - t0

        BotocoreStubber.process_request = process_request  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            BotocoreStubber.process_request = real  # type: ignore[method-assign]


@contextmanager
def moto_without_table_backup() -> Iterator[None]:
    """moto's TransactWriteItems deep-copies the whole table once per action, as a rollback
    backup: O(actions x table), 3 minutes for the first run at 5,000 workers, all of it moto's.
    The backup only matters when a transaction fails, and none fails here, so the benchmark skips
    it (items are still deep-copied where moto updates them)."""
    import copy as real_copy
    import importlib
    import types

    models: Any = importlib.import_module("moto.dynamodb.models")

    def deepcopy(obj: Any, memo: Any = None) -> Any:
        if isinstance(obj, models.Table):
            return obj
        return real_copy.deepcopy(obj, memo)

    saved = models.copy
    models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=real_copy.copy)
    try:
        yield
    finally:
        models.copy = saved


@contextmanager
def capture_evaluate(phases: Phases, captured: list[tuple[Any, ...]]) -> Iterator[None]:
    """Times evaluate() inside run_once and keeps its inputs, to repeat it on its own."""
    import importlib

    # run_once looks evaluate up in its module at call time; this replaces it for the block
    runner: Any = importlib.import_module("oomcheck.runner")

    real = runner.evaluate

    def recording(state: Any, obs: Any, policy: Any, now: float) -> Any:
        captured.append((state, obs, policy, now))
        t0 = time.perf_counter()
        try:
            return real(state, obs, policy, now)
        finally:
            phases.spent["evaluate"] = phases.spent.get("evaluate", 0.0) + time.perf_counter() - t0

    runner.evaluate = recording
    try:
        yield
    finally:
        runner.evaluate = real


def _scenario(
    name: str,
    deps: Any,
    meter: DynamoMeter,
    moto: MotoTime,
    clock: FakeClock,
    *,
    repeats: int,
    change: Callable[[], None] | None = None,
) -> dict[str, Any]:
    from oomcheck.detect import evaluate
    from oomcheck.runner import run_once

    clock.now += 60
    if change is not None:
        change()
    phases = Phases()
    for obj, attr, label in (
        (deps.store, "acquire", "dynamodb"),
        (deps.store, "load", "dynamodb load"),
        (deps.store, "save", "dynamodb save"),
        (deps.store, "release", "dynamodb"),
        (deps.inspector, "observe", "inspect (fake)"),
    ):
        phases.wrap(obj, attr, label)
    captured: list[tuple[Any, ...]] = []
    mark = meter.mark()
    published = len(deps.publisher.messages)
    in_moto = moto.seconds
    with capture_evaluate(phases, captured):
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        report = run_once(deps, "check")
        cpu = time.process_time() - cpu0
        total = time.perf_counter() - t0
    moto_s = moto.seconds - in_moto
    for attr in ("acquire", "load", "save", "release"):
        vars(deps.store).pop(attr, None)
    vars(deps.inspector).pop("observe", None)
    state, obs, policy, now = captured[0]
    evals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(state, obs, policy, now)
        evals.append(time.perf_counter() - t0)
    dyn = meter.since(mark)
    out: dict[str, Any] = {
        "name": name,
        "total_s": total,
        "moto_s": moto_s,
        # oomcheck's own share: everything but moto; the fakes answer instantly, so this is CPU
        "own_s": total - moto_s,
        "cpu_s": cpu,
        "evaluate_s": median(evals),
        "evaluate_runs": len(evals),
        "phases": dict(phases.spent),
        "state_writes": int(report.stats.get("state_writes", 0)),
        "alerts": len(deps.publisher.messages) - published,
        "sent": list(deps.publisher.messages[published:]),
        "alive": sum(1 for w in report.workers if w["status"] == "alive"),
        "findings": sorted({f.kind.value for f in report.findings if f.alertable}),
        "state_status": report.sources.get("state"),
        **dyn,
    }
    progress(
        f"fleet: {name}: run {ms(total)} (moto {ms(moto_s)}), evaluate {ms(out['evaluate_s'])}, "
        f"{dyn['item_writes']} item writes in {dyn['transactions']} transaction(s), "
        f"{out['alerts']} alert(s), state {out['state_status']}"
    )
    return out


def alerted(messages: list[Any], victims: dict[str, list[str]]) -> dict[str, Any]:
    """What the messages of one run tell a reader about the workers that died in it
    (``victims``: nodename -> the ids of the tasks that were on it): how many messages, and how
    many of those workers and of their tasks the email texts name."""
    texts = [m.text for m in messages]
    ids = [task for tasks in victims.values() for task in tasks]
    return {
        "messages": len(messages),
        "subjects": [m.subject for m in messages],
        "incidents": sum(len(m.incident_ids) for m in messages),
        "workers": len(victims),
        # each worker on a line of its own in WORKERS, each task as "name [id]" in TASKS
        "workers_named": sum(1 for w in victims if any(f"- {w}: " in t for t in texts)),
        "tasks": len(ids),
        "tasks_named": sum(1 for i in ids if any(f"[{i}]" in t for t in texts)),
    }


def _measure(size: int, repeats: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from oomcheck.config.settings import Settings
    from oomcheck.ports import Deps
    from oomcheck.sources.inspector import CeleryInspector
    from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition

    clock = FakeClock(1_790_000_000.0)
    fleet = FleetControl(size, clock)
    moto = MotoTime()
    with mock_aws(), moto_without_table_backup(), moto.installed():
        dynamo = boto3.client("dynamodb", region_name="us-east-1")
        dynamo.create_table(**table_definition("oomcheck-bench"))
        meter = DynamoMeter(dynamo)
        settings = Settings(broker_url="redis://127.0.0.1:1/0", result_backend="redis://x/1")
        deps = Deps(
            settings=settings,
            store=DynamoDBStateStore("oomcheck-bench", "bench", client=dynamo),
            publisher=CountingPublisher(),
            inspector=CeleryInspector("memory://", app=FakeApp(fleet), clock=clock),
            results=FleetResults(fleet),
            broker=FleetBroker(fleet),
            clock=clock,
        )
        deps.off["exits"] = "not part of this benchmark"
        runs = [_scenario("first", deps, meter, moto, clock, repeats=1)]
        runs.append(_scenario("unchanged", deps, meter, moto, clock, repeats=repeats))

        busy = [w for w in fleet.workers.values() if w.tasks][: max(1, size // 100)]

        def one_percent() -> None:
            for w in busy:
                old = w.tasks.pop(0)
                w.tasks.append(fleet.new_task(w, old["worker_pid"]))

        runs.append(
            _scenario("1% busy", deps, meter, moto, clock, repeats=repeats, change=one_percent)
        )
        doomed = [w.name for w in fleet.workers.values() if w.tasks][-10:]
        # the fake fleet's tasks never finish: these are the ones on each worker when it died
        victims = {name: [t["id"] for t in fleet.workers[name].tasks] for name in doomed}

        def ten_die() -> None:
            fleet.alive.difference_update(doomed)

        runs.append(_scenario("10 died", deps, meter, moto, clock, repeats=repeats, change=ten_die))
        runs[-1]["alerted"] = alerted(runs[-1]["sent"], victims)
        runs.append(_scenario("after (nothing new)", deps, meter, moto, clock, repeats=repeats))

        # the state as stored, item by item
        sizes: list[tuple[int, str]] = []
        kwargs: dict[str, Any] = {
            "TableName": "oomcheck-bench",
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "bench"}},
        }
        while True:
            page = dynamo.query(**kwargs)
            sizes += [(item_size(i), i["sk"]["S"]) for i in page["Items"]]
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    largest = max(sizes)
    return {
        "size": size,
        "runs": runs,
        "items": len(sizes),
        "total_bytes": sum(s for s, _ in sizes),
        "largest_bytes": largest[0],
        "largest_key": largest[1].split("#", 1)[0],
        "tasks": sum(len(w.tasks) for w in fleet.workers.values()),
        "changed_workers": len(busy),
    }


def run(quick: bool = False) -> Result:
    result = Result("fleet")
    sizes = (1000,) if quick else (1000, 5000)
    repeats = 3 if quick else 5
    for size in sizes:
        progress(f"fleet: {size:,} workers (fake control, DynamoDB on moto)")
        m = _measure(size, repeats)
        result.facts[f"fleet_{size}"] = m
        runs = {r["name"]: r for r in m["runs"]}
        first, steady, busy, died = (
            runs["first"],
            runs["unchanged"],
            runs["1% busy"],
            runs["10 died"],
        )
        n = f"{size:,} workers"
        result.add(
            f"{n}: evaluate() (median of {steady['evaluate_runs']}, nothing changed)",
            ms(steady["evaluate_s"]),
            f"whole run, oomcheck's share: {ms(steady['own_s'])}",
            "(informational)",
            None,
        )
        lambda_s = steady["own_s"] * LAMBDA_CPU_FACTOR
        phases = ", ".join(f"{k} {ms(v)}" for k, v in sorted(steady["phases"].items()))
        result.add(
            f"{n}: whole check run, nothing changed (oomcheck's share, moto excluded)",
            f"{ms(steady['own_s'])} here; ~{lambda_s:.1f} s at 256 MB",
            f"first run (all new) {ms(first['own_s'])}; moto took {ms(steady['moto_s'])}",
            "< 30 s Lambda timeout at 256 MB",
            lambda_s < 30.0,
        )
        result.notes.append(
            f"{n}, steady run by phase (wall, moto included): {phases}; moto's share "
            f"{ms(steady['moto_s'])}. save() encodes only records that changed, and a warm "
            "store skips load() when no other run wrote since. In watch mode a check every 5 s "
            f"needs the run under 5 s on the Lambda: ~{lambda_s:.1f} s here"
        )
        result.add(
            f"{n}: state size in DynamoDB",
            f"{m['items']:,} items, {m['total_bytes'] / 1024:,.0f} KB; largest "
            f"{m['largest_bytes'] / 1024:.1f} KB ({m['largest_key']})",
            f"{m['tasks']:,} active tasks; query reads {steady['rru']:,} RRU per run",
            "largest item < 400 KB",
            m["largest_bytes"] < DYNAMO_ITEM_LIMIT,
        )
        biggest_tx = max(r["max_tx_bytes"] for r in m["runs"])
        most_actions = max(r["max_actions"] for r in m["runs"])
        result.add(
            f"{n}: largest TransactWriteItems",
            f"{most_actions} actions, {biggest_tx / 1024:,.0f} KB of items",
            f"first run: {first['item_writes']:,} puts in {first['transactions']} tx",
            "<= 100 actions, < 4 MB",
            most_actions <= TX_ACTIONS_LIMIT and biggest_tx < TX_BYTES_LIMIT,
        )
        result.add(
            f"{n}: DynamoDB writes, run with nothing changed",
            f"{steady['item_writes']} item writes (+{steady['update_items']} lease updates), "
            f"{steady['wru']} WRU",
            f"first run: {first['item_writes']:,} item writes, {first['wru']:,} WRU",
            "~0 item writes",
            steady["item_writes"] == 0,
        )
        result.add(
            f"{n}: DynamoDB writes, 1% ({m['changed_workers']}) changed one task",
            f"{busy['item_writes']} item writes, {busy['wru']} WRU",
            f"{m['changed_workers']} workers changed",
            f"<= {m['changed_workers']} (one per change)",
            busy["item_writes"] <= m["changed_workers"],
        )
        result.add(
            f"{n}: DynamoDB writes, 10 workers died",
            f"{died['item_writes']} item writes in {died['transactions']} tx, {died['wru']} WRU",
            "10 deaths: worker+incident+kill records, incident again once alerted",
            "O(changes), not O(workers)",
            died["item_writes"] < 10 * 10,
        )
        told = died["alerted"]
        result.add(
            f"{n}: the alert, 10 workers died in one run",
            f"{told['messages']} message(s) for {told['incidents']} incidents, naming "
            f"{told['workers_named']}/{told['workers']} workers and "
            f"{told['tasks_named']}/{told['tasks']} of their tasks",
            "subject: " + " | ".join(told["subjects"]),
            "1 message naming every worker and task",
            told["messages"] == 1
            and told["incidents"] == told["workers_named"] == told["workers"] == 10
            and told["tasks_named"] == told["tasks"] > 0,
        )
        result.facts[f"steady_rru_{size}"] = steady["rru"]
        result.facts[f"steady_wru_{size}"] = steady["wru"]
        result.facts[f"steady_run_s_{size}"] = steady["own_s"]
    result.notes.append(
        "fleet: remote control, result scan and broker scan are fakes that answer instantly "
        "with Celery-shaped replies; DynamoDB is moto in-process (mock_aws), so request counts "
        "and sizes are exact but its latency is not AWS's. Units are on-demand billing units "
        "computed from the item sizes (DynamoMeter in bench/common.py). '~N s at 256 MB' "
        f"scales oomcheck's CPU time by {LAMBDA_CPU_FACTOR:.1f} (a 256 MB Lambda gets "
        "256/1769 of a vCPU)."
    )
    return result


if __name__ == "__main__":
    import sys

    from bench.common import render_table

    quick_run = "--quick" in sys.argv
    print(render_table([run(quick_run)], "bench_fleet"))
