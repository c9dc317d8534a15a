"""Hostile values among good records on a real Redis: the good records are all found, each hostile
value is counted as skipped, and the scan returns (so the source reports ok) instead of raising.

Before bounded parsing, one value nested 100k levels deep under a ``celery-task-meta-*`` key, or
in the broker's ``unacked`` hash, raised RecursionError out of the scan and took the whole source
down for the run.
"""

from __future__ import annotations

import json
import pickle
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import redis

from oomcheck.sources.broker import RedisBrokerScanner
from oomcheck.sources.redis_client import make_redis
from oomcheck.sources.results import RedisResultScanner

pytestmark = pytest.mark.integration

DEEP = 100_000
BIG = 10 * 2**20
RESULT_PREFIX = "hv:"
BROKER_PREFIX = "hvb:"
EXPIRES = 3600


class _PickleBomb:
    """Unpickling this would create a file: proof that nobody unpickles what we read."""

    marker = ""

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _bomb(tmp_path: Path) -> tuple[bytes, Path]:
    bomb = _PickleBomb()
    bomb.marker = str(tmp_path / "unpickled")
    return pickle.dumps({"status": "STARTED", "bomb": bomb}), Path(bomb.marker)


def _started(task_id: str, worker: str, pid: int) -> bytes:
    """A STARTED record in Celery's layout (result_extended), status first."""
    return json.dumps(
        {
            "status": "STARTED",
            "result": {"pid": pid, "hostname": worker},
            "traceback": None,
            "children": [],
            "date_done": None,
            "name": "app.work",
            "args": [1],
            "kwargs": {},
            "worker": worker,
            "task_id": task_id,
        }
    ).encode()


def _lost(task_id: str, worker: str) -> bytes:
    return json.dumps(
        {
            "status": "FAILURE",
            "result": {
                "exc_type": "WorkerLostError",
                "exc_message": ["Worker exited prematurely: signal 9 (SIGKILL) Job: 1."],
                "exc_module": "billiard.exceptions",
            },
            "traceback": None,
            "children": [],
            "date_done": "2025-11-24T13:50:29",
            "name": "app.hog",
            "worker": worker,
            "task_id": task_id,
        }
    ).encode()


def hostile_results(pickled: bytes) -> dict[str, bytes]:
    started_head = b'{"status": "STARTED", "result": '
    return {
        "deep-array": b"[" * DEEP,
        "deep-array-closed": b"[" * DEEP + b"]" * DEEP,
        "deep-object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        # Read whole (under the head size) and read as a head: both parsers are guarded.
        "deep-in-small-started": started_head + b"[" * 3000 + b"]" * 3000 + b"}",
        "deep-in-started": started_head + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
        "deep-in-failure": b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", '
        b'"exc_message": ' + b"[" * DEEP + b"]" * DEEP + b"}}",
        "huge-deep": started_head + b"[" * BIG,
        "pickle": pickled,
        "invalid-utf8": b'{"status": "STARTED", "result": {"pid": 1, "hostname": "w\xff\xfe"}}',
        "not-json": b"{status: STARTED, result: {pid: 1}}",
        "not-an-object": b'["STARTED", {"pid": 1}]',
        "json-string": b'"STARTED"',
        "status-number": b'{"status": 5, "result": {"pid": 1}}',
        "status-list": b'{"status": ["STARTED"], "result": {"pid": 1}}',
    }


@pytest.mark.parametrize("scripted", [True, False], ids=["lua", "client-side"])
def test_results_scan_skips_and_counts_hostile_values(
    redis_db_url: str, tmp_path: Path, scripted: bool
) -> None:
    # Given good records of three workers among hostile values under the same key pattern
    client = make_redis(redis_db_url)
    assert isinstance(client, redis.Redis)
    key = f"{RESULT_PREFIX}celery-task-meta-"
    good_started = {f"s{i}": f"w{i}@box" for i in range(3)}
    for task_id, worker in good_started.items():
        client.set(key + task_id, _started(task_id, worker, 100), ex=EXPIRES)
    client.set(key + "lost", _lost("lost", "w9@box"), ex=EXPIRES)
    pickled, marker = _bomb(tmp_path)
    hostile = hostile_results(pickled)
    for name, value in hostile.items():
        client.set(key + name, value, ex=EXPIRES)
    scanner = RedisResultScanner(client, keyprefix=RESULT_PREFIX, result_expires=EXPIRES, batch=5)
    if not scripted:
        scanner._scripted[""] = False

    # When the backend is scanned
    tracemalloc.start()
    began = time.monotonic()
    try:
        scan = scanner.scan(time.time())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    took = time.monotonic() - began

    # Then every good record is found, every hostile value counted, nothing executed
    assert {t.id: t.worker for t in scan.started} == good_started
    assert [(f.id, f.signal, f.worker) for f in scan.lost_failures] == [("lost", 9, "w9@box")]
    assert scan.keys_scanned == len(good_started) + 1 + len(hostile)
    assert scan.skipped_values == len(hostile)
    assert scan.cursor is None
    assert not marker.exists()
    # A 10 MB hostile value never comes to this process whole, and rejecting the deep ones is
    # cheap.
    assert peak < 2 * 2**20, f"scan allocated {peak / 2**20:.1f} MB"
    assert took < 5.0, f"scan took {took:.1f} s"
    assert scanner._scripted.get("", True) is scripted


def _message(task_id: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A kombu message the way the Redis transport stores it in ``unacked``."""
    return {
        "body": "W1tdLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "app.late", "id": task_id, **(headers or {})},
        "properties": {"delivery_info": {"exchange": "", "routing_key": "celery"}},
    }


def hostile_unacked(pickled: bytes) -> dict[str, bytes]:
    deep_header = json.dumps([_message("deep-header-task"), "", "celery"]).replace(
        '"lang": "py"', '"lang": ' + "[" * 30_000 + "]" * 30_000
    )
    return {
        "deep-array": b"[" * DEEP,
        "deep-array-closed": b"[" * DEEP + b"]" * DEEP,
        "deep-object": b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
        "deep-in-headers": deep_header.encode(),
        "huge": b'[{"body": "x", "headers": {"id": "' + b"h" * BIG + b'"}}, "", "celery"]',
        "huge-deep": b"[" * BIG,
        "pickle": pickled,
        "invalid-utf8": json.dumps([_message("utf8-task"), "", "celery"])
        .encode()
        .replace(b"app.late", b"app.\xff\xfe"),
        "not-json": b"[{body: x}]",
        "not-a-list": json.dumps(_message("object-task")).encode(),
        "id-of-wrong-type": json.dumps([{"headers": {"id": 5}}, "", "celery"]).encode(),
    }


@pytest.mark.parametrize("scripted", [True, False], ids=["lua", "client-side"])
def test_unacked_scan_skips_and_counts_hostile_entries(
    broker_db_url: str, tmp_path: Path, scripted: bool
) -> None:
    # Given five messages in flight among hostile entries of the unacked hash
    client = make_redis(broker_db_url)
    assert isinstance(client, redis.Redis)
    now = time.time()
    good = [f"task{i}" for i in range(5)]
    for i, task_id in enumerate(good):
        tag = f"tag{i}"
        client.hset(f"{BROKER_PREFIX}unacked", tag, json.dumps([_message(task_id), "", "celery"]))
        client.zadd(f"{BROKER_PREFIX}unacked_index", {tag: now - 60 + i})
    pickled, marker = _bomb(tmp_path)
    hostile = hostile_unacked(pickled)
    for tag, value in hostile.items():
        client.hset(f"{BROKER_PREFIX}unacked", tag, value)
        client.zadd(f"{BROKER_PREFIX}unacked_index", {tag: now - 120})
    scanner = RedisBrokerScanner(client, keyprefix=BROKER_PREFIX, batch=4)
    if not scripted:
        scanner._scripted = False

    # When the unacked hash is scanned
    tracemalloc.start()
    began = time.monotonic()
    try:
        scan = scanner.scan(now)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    took = time.monotonic() - began

    # Then every good message is found, every hostile entry counted, nothing executed
    assert [m.task_id for m in scan.messages] == good
    assert scan.entries_scanned == len(good) + len(hostile)
    assert scan.skipped == len(hostile) == scanner.skipped
    assert not scan.truncated
    assert not marker.exists()
    assert peak < 2 * 2**20, f"unacked scan allocated {peak / 2**20:.1f} MB"
    assert took < 5.0, f"unacked scan took {took:.1f} s"
