"""Parsing of result-backend values, unacked broker entries, TTL arithmetic and URL redaction.

No network: these are the pure functions the Redis adapters are built on.
"""

from __future__ import annotations

import json
import pickle
import ssl

import pytest

from oomcheck.model import Cause, LostFailure, StartedTask
from oomcheck.sources.broker import parse_unacked_entry
from oomcheck.sources.redis_client import make_redis, redact
from oomcheck.sources.results import (
    HEAD_BYTES,
    PROBE_BYTES,
    TAIL_BYTES,
    interpret_record,
    lost_reason,
    partial_object,
    probe_status,
    written_at,
)

NOW = 1_700_000_000.0

STARTED_EXTENDED = (
    b'{"status": "STARTED", "result": {"pid": 9849, "hostname": "w2@vm"}, "traceback": null, '
    b'"children": [], "date_done": null, "name": "papp.sleepy", "args": [20], "kwargs": {}, '
    b'"worker": "w2@vm", "retries": 0, "queue": "celery", "task_id": "t-1"}'
)
STARTED_PLAIN = (
    b'{"status": "STARTED", "result": {"pid": 12, "hostname": "celery@host"}, '
    b'"traceback": null, "children": [], "date_done": null, "task_id": "t-2"}'
)
LOST_SIGNAL = (
    b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": '
    b'["Worker exited prematurely: signal 9 (SIGKILL) Job: 3."], "exc_module": '
    b'"billiard.exceptions"}, "traceback": "Traceback (most recent call last):\\n  ...", '
    b'"children": [], "date_done": "2024-05-17T10:00:00+00:00", "name": "papp.hog", '
    b'"args": [1], "kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", '
    b'"task_id": "t-3"}'
)
LOST_EXITCODE = (
    b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": '
    b'["Worker exited prematurely: exitcode 137 Job: 8."], "exc_module": '
    b'"billiard.exceptions"}, "traceback": null, "children": [], "date_done": null, '
    b'"task_id": "t-4"}'
)
OTHER_FAILURE = (
    b'{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad"], '
    b'"exc_module": "builtins"}, "traceback": "...", "children": [], "date_done": null}'
)
SUCCESS = (
    b'{"status": "SUCCESS", "result": {"rows": 5}, "traceback": null, "children": [], '
    b'"date_done": "2024-05-17T10:00:00+00:00", "task_id": "t-5"}'
)


def parse(value: bytes, pttl: int | None = 86_000_000, **kw: float | None):
    """interpret_record as the scan calls it: head/tail cut the way Redis would cut them."""
    head = value[:HEAD_BYTES]
    tail = value[-TAIL_BYTES:] if len(value) > HEAD_BYTES else b""
    return interpret_record("tid", head, tail, len(value), pttl, NOW, **kw)


# -- probe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (STARTED_EXTENDED, "STARTED"),
        (LOST_SIGNAL, "FAILURE"),
        (SUCCESS, "SUCCESS"),
        (b'{"status":"STARTED","result":null}', "STARTED"),
        (b'  {\n "status" : "RETRY"}', "RETRY"),
        (b'{"result": 1, "status": "STARTED"}', None),
        (b"\x80\x04\x95\x10\x00", None),
        (b"status: STARTED\n", None),
        (b"", None),
    ],
)
def test_probe_status(value: bytes, status: str | None) -> None:
    assert probe_status(value[:64]) == status


def test_probe_is_exactly_celerys_started_prefix() -> None:
    # The Lua fast path compares the probe with this constant; if either changes, both must.
    assert len(b'{"status": "STARTED"') == PROBE_BYTES
    assert STARTED_EXTENDED[:PROBE_BYTES] == b'{"status": "STARTED"'


# -- STARTED / FAILURE records --------------------------------------------------------------------


def test_started_extended() -> None:
    record, skipped = parse(STARTED_EXTENDED, pttl=86_390_000)
    assert not skipped
    assert record == StartedTask(
        id="tid", worker="w2@vm", pid=9849, name="papp.sleepy", written_at=pytest.approx(NOW - 10.0)
    )


def test_started_without_result_extended_has_no_name() -> None:
    record, skipped = parse(STARTED_PLAIN)
    assert not skipped
    assert isinstance(record, StartedTask)
    assert (record.worker, record.pid, record.name) == ("celery@host", 12, None)


def test_started_compact_json_and_other_key_order() -> None:
    compact = b'{"status":"STARTED","result":{"pid":7,"hostname":"a@b"}}'
    reordered = b'{"result": {"pid": 8, "hostname": "c@d"}, "status": "STARTED"}'
    assert parse(compact)[0] == StartedTask("tid", "a@b", 7, None, parse(compact)[0].written_at)
    record = parse(reordered)[0]
    assert isinstance(record, StartedTask)
    assert (record.worker, record.pid) == ("c@d", 8)


def test_started_with_bad_result_types_keeps_what_is_valid() -> None:
    value = (
        b'{"status": "STARTED", "result": {"pid": "12", "hostname": 5}, "worker": "w@x", "name": 3}'
    )
    record, skipped = parse(value)
    assert not skipped
    assert record == StartedTask(
        "tid", worker="w@x", pid=None, name=None, written_at=record.written_at
    )


def test_worker_lost_signal() -> None:
    record, skipped = parse(LOST_SIGNAL, pttl=86_000_000)
    assert not skipped
    assert record == LostFailure(
        id="tid",
        message="Worker exited prematurely: signal 9 (SIGKILL) Job: 3.",
        name="papp.hog",
        worker="w1@vm",
        signal=9,
        cause=Cause.KILLED,
        exitcode=None,
        written_at=pytest.approx(NOW - 400.0),
    )


def test_worker_lost_exitcode() -> None:
    record, _ = parse(LOST_EXITCODE)
    assert isinstance(record, LostFailure)
    assert (record.signal, record.exitcode, record.worker, record.name) == (None, 137, None, None)


def test_worker_lost_message_as_plain_string() -> None:
    value = (
        b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", '
        b'"exc_message": "Worker exited prematurely: signal 15 (SIGTERM) Job: 1."}}'
    )
    record, _ = parse(value)
    assert isinstance(record, LostFailure)
    assert record.signal == 15


@pytest.mark.parametrize(
    "value",
    [
        OTHER_FAILURE,
        SUCCESS,
        b'{"status": "RETRY", "result": {"exc_type": "Retry"}}',
        b'{"status": "PENDING"}',
    ],
)
def test_other_states_are_ignored_not_skipped(value: bytes) -> None:
    assert parse(value) == (None, False)


@pytest.mark.parametrize(
    "value",
    [
        pickle.dumps({"status": "STARTED", "result": {"pid": 1, "hostname": "h"}}),
        # msgpack of {"status": "STARTED"}: a fixmap, then fixstr key/value
        b"\x81\xa6status\xa7STARTED",
        b"status: STARTED\nresult: {pid: 1}\n",  # yaml
        b"\x00\xff\xfe garbage",
        b'["status", "STARTED"]',  # JSON, but not an object
        b'{"status": "STARTED", "result": {"pid": 1',  # truncated but complete length
        b'{"status": 5}',
        b'{"status": "STARTED", "result": "\xff\xfe"}',  # invalid UTF-8
    ],
)
def test_unreadable_values_are_skipped(value: bytes) -> None:
    assert parse(value) == (None, True)


def test_pickle_is_never_loaded(tmp_path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    value = pickle.dumps({"status": "STARTED", "bomb": Bomb()})
    assert parse(value) == (None, True)
    assert not marker.exists()


def test_huge_started_reads_head_and_tail_only() -> None:
    big = b"x" * (10 * 2**20)
    value = (
        b'{"status": "STARTED", "result": {"pid": 4242, "hostname": "w@big"}, '
        b'"traceback": null, "children": [], "date_done": null, "name": "app.big", '
        b'"args": ["' + big + b'"], "kwargs": {}, "worker": "w@big", "retries": 0, '
        b'"queue": "celery", "task_id": "x"}'
    )
    record, skipped = parse(value)
    assert not skipped
    assert record == StartedTask("tid", "w@big", 4242, "app.big", record.written_at)


def test_huge_lost_failure_takes_worker_from_tail() -> None:
    big = "y" * (HEAD_BYTES * 3)
    value = json.dumps(
        {
            "status": "FAILURE",
            "result": {
                "exc_type": "WorkerLostError",
                "exc_message": ["Worker exited prematurely: signal 9 (SIGKILL) Job: 2."],
                "exc_module": "billiard.exceptions",
            },
            "traceback": None,
            "children": [],
            "date_done": None,
            "name": "app.huge",
            "args": [big],
            "kwargs": {"worker": "decoy"},
            "worker": "real@host",
            "retries": 0,
            "queue": "celery",
            "task_id": "tid",
        }
    ).encode()
    assert len(value) > HEAD_BYTES + TAIL_BYTES
    record, skipped = parse(value)
    assert not skipped
    assert isinstance(record, LostFailure)
    assert (record.worker, record.signal, record.name) == ("real@host", 9, "app.huge")


def test_huge_value_whose_result_is_cut_off_is_skipped() -> None:
    value = (
        b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": ["'
        + b"z" * (HEAD_BYTES * 2)
        + b'"]}}'
    )
    assert parse(value) == (None, True)


def test_huge_non_json_is_skipped() -> None:
    assert parse(b"\x80\x04" + b"q" * (HEAD_BYTES * 4)) == (None, True)


DEEP = 100_000
STARTED_HEAD = b'{"status": "STARTED", "result": '


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"[" * DEEP + b"]" * DEEP, id="deep-array"),
        pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="deep-object"),
        pytest.param(b'{"a":' * 3000, id="deep-object-within-the-head"),
        pytest.param(STARTED_HEAD + b"[" * 3000 + b"]" * 3000 + b"}", id="deep-result-read-whole"),
        pytest.param(STARTED_HEAD + b'{"a":' * DEEP, id="deep-result-read-as-a-head"),
        pytest.param(
            b'{"status": "FAILURE", "result": {"exc_type": "WorkerLostError", "exc_message": '
            + b"[" * DEEP,
            id="deep-failure",
        ),
    ],
)
def test_values_nested_too_deep_are_skipped_not_raised(value: bytes) -> None:
    assert parse(value) == (None, True)


def test_a_deep_worker_in_the_tail_is_not_read() -> None:
    value = (
        b'{"status": "STARTED", "result": {"pid": 3}, "args": ["'
        + b"x" * (HEAD_BYTES * 2)
        + b'"], "worker": '
        + b"[" * 1000
    )
    record, skipped = parse(value)
    assert not skipped
    assert isinstance(record, StartedTask)
    assert (record.worker, record.pid) == (None, 3)


def test_a_lost_reason_with_endless_digits_is_read_without_raising() -> None:
    value = json.dumps(
        {
            "status": "FAILURE",
            "result": {
                "exc_type": "WorkerLostError",
                "exc_message": ["Worker exited prematurely: signal " + "9" * 5000 + " Job: 1."],
            },
            "worker": "w@h",
        }
    ).encode()
    record, skipped = parse(value)
    assert not skipped
    assert isinstance(record, LostFailure)
    assert (record.worker, record.signal, record.exitcode) == ("w@h", None, None)


# -- pieces ---------------------------------------------------------------------------------------


def test_partial_object_stops_at_cut() -> None:
    text = '{"status": "STARTED", "result": {"pid": 1}, "name": "a", "args": ["long str'
    assert partial_object(text) == {"status": "STARTED", "result": {"pid": 1}, "name": "a"}
    assert partial_object('  { "a" : 1 , "b":2}') == {"a": 1, "b": 2}
    assert partial_object("[1, 2]") == {}
    assert partial_object('{"a": 1 "b": 2}') == {"a": 1}
    assert partial_object("") == {}
    # A member nested too deep ends the object like a cut-off one.
    deep = '{"status": "STARTED", "result": {"pid": 1}, "args": ' + "[" * 5000 + "]" * 5000 + "}"
    assert partial_object(deep) == {"status": "STARTED", "result": {"pid": 1}}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.", (9, None)),
        ("Worker exited prematurely: exitcode 137 Job: 4.", (None, 137)),
        ("Worker exited prematurely: exitcode -9.", (None, -9)),
        ("Worker exited prematurely: MemoryError.", (None, None)),
        ("", (None, None)),
        ("signal " + "9" * 5000, (None, None)),
        ("exitcode 1234567890123", (None, None)),
    ],
)
def test_lost_reason(message: str, expected: tuple[int | None, int | None]) -> None:
    assert lost_reason(message) == expected


def test_written_at_from_ttl() -> None:
    assert written_at(NOW, 86_400_000, 86400.0) == NOW
    assert written_at(NOW, 80_000_000, 86400.0) == pytest.approx(NOW - 6400.0)
    assert written_at(NOW, 1_500, 3600) == pytest.approx(NOW - 3598.5)
    # no TTL, key gone, or Celery's result_expires off: nothing to say
    assert written_at(NOW, -1, 86400.0) is None
    assert written_at(NOW, -2, 86400.0) is None
    assert written_at(NOW, None, 86400.0) is None
    assert written_at(NOW, 5000, None) is None
    assert written_at(NOW, 5000, 0) is None
    # TTL longer than the configured expiry: never in the future
    assert written_at(NOW, 90_000_000, 86400.0) == NOW


def test_failure_uses_failure_expires() -> None:
    failure, _ = parse(LOST_SIGNAL, pttl=3_000_000, result_expires=86400.0, failure_expires=3600.0)
    started, _ = parse(
        STARTED_PLAIN, pttl=3_000_000, result_expires=86400.0, failure_expires=3600.0
    )
    assert failure.written_at == pytest.approx(NOW - 600.0)
    assert started.written_at == pytest.approx(NOW - 83400.0)
    none, _ = parse(STARTED_PLAIN, pttl=3_000_000, result_expires=None)
    assert none.written_at is None


# -- broker entries -------------------------------------------------------------------------------


def _entry(headers: dict, delivery: dict | None = None, body: str = "W1sxXSwge31d") -> bytes:
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_info": delivery or {"exchange": "", "routing_key": "q"},
            "delivery_tag": "tag",
            "body_encoding": "base64",
        },
    }
    return json.dumps([message, "", "q"]).encode()


def test_unacked_entry_fresh() -> None:
    raw = _entry({"id": "abc", "task": "app.t", "retries": 0})
    msg = parse_unacked_entry("tag", raw, 12.5)
    assert msg is not None
    assert (msg.task_id, msg.name, msg.delivery_tag, msg.fetched_at, msg.redelivered) == (
        "abc",
        "app.t",
        "tag",
        12.5,
        False,
    )


def test_unacked_entry_redelivered_in_headers_or_delivery_info() -> None:
    # kombu's restore sets both; either alone is enough.
    both = _entry(
        {"id": "a", "task": "t", "redelivered": True},
        {"exchange": "", "routing_key": "q", "redelivered": True},
    )
    headers_only = _entry({"id": "a", "task": "t", "redelivered": True})
    info_only = _entry({"id": "a", "task": "t"}, {"routing_key": "q", "redelivered": True})
    for raw in (both, headers_only, info_only):
        assert parse_unacked_entry("t", raw, None).redelivered


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage",
        b"\x80\x04\x95",
        b"[]",
        b'{"headers": {"id": "x"}}',
        _entry({"task": "no.id"}),  # task protocol 1: the id is inside the body
        json.dumps([{"body": "", "headers": "nope"}, "", "q"]).encode(),
        b'[{"body": "", "headers": {"id": "x"',  # cut off
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
        json.dumps([{"body": "", "headers": {"id": "x", "deep": 0}}, "", "q"])
        .replace('"deep": 0', '"deep": ' + "[" * 100 + "]" * 100)
        .encode(),
    ],
)
def test_unacked_entry_malformed(raw: bytes) -> None:
    assert parse_unacked_entry("t", raw, None) is None


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/1", "redis://user:***@host/1"),
        (
            "rediss://:p@ss/w:rd@host:6380/0?ssl_cert_reqs=required",
            "rediss://:***@host:6380/0?ssl_cert_reqs=required",
        ),
        ("redis://bare-token@host", "redis://***@host"),
        (
            "sentinel://:pw1@h1:26379;sentinel://:pw2@h2:26379",
            "sentinel://:***@h1:26379;sentinel://:***@h2:26379",
        ),
        ("redis://host:6379/0?password=abc&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis+cluster://:pw@a:7000,b:7001", "redis+cluster://:***@a:7000,b:7001"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("no url here, auth_token=xyz", "no url here, auth_token=***"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://:hunter2@host/0",
        "redis://:hunter2@host:notaport/0",
        "redis://:hunter2@host:6379/notadb",
        "redis://:hunter2@host:6379/0?ssl_cert_reqs=required",
        "rediss://:hunter2@host:6379/0?ssl_cert_reqs=sometimes",
        "redis://:hunter2@a:1,b:2/0",
        "redis+cluster://:hunter2@a:7000/3",
        "sentinel://:hunter2@h:26379",  # no master_name
        "sentinel://:hunter2@",
    ],
)
def test_bad_urls_never_echo_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        make_redis(url)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_make_redis_parses_celery_forms_without_io() -> None:
    client = make_redis("redis://:pw@127.0.0.1:6390/3", socket_timeout=1.5)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "127.0.0.1",
        6390,
        3,
        "pw",
    )
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] <= 1.5
    tls = make_redis("rediss://127.0.0.1:6390/0?ssl_cert_reqs=CERT_NONE&ssl_ca_certs=%2Ftmp%2Fca")
    tkw = tls.connection_pool.connection_kwargs
    assert tkw["ssl_cert_reqs"] == ssl.CERT_NONE
    assert tkw["ssl_ca_certs"] == "/tmp/ca"
    assert tkw["ssl_check_hostname"] is False
    default_tls = make_redis("rediss://127.0.0.1:6390/0")
    assert default_tls.connection_pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    via_options = make_redis("redis://127.0.0.1:6390/0", ssl_options={"ssl_cert_reqs": "optional"})
    assert via_options.connection_pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    kombu_style = make_redis("redis://127.0.0.1:6390?virtual_host=/4")
    assert kombu_style.connection_pool.connection_kwargs["db"] == 4
