"""In the Lambda, oomcheck's and kombu's log lines are Powertools JSON lines with the run's
correlation keys, without passwords (the handler's part: tests/unit/test_handler.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from oomcheck.entry.lambdalog import LIBRARY_LOGGERS, bind_run, route_library_logs

SECRET = "s3cr3t-pa55"


@contextlib.contextmanager
def library_loggers_restored() -> Iterator[None]:
    """route_library_logs rewires process-wide loggers: put them back for the other tests."""
    saved = {}
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = (list(lg.handlers), lg.propagate, lg.level)
    try:
        yield
    finally:
        for name, (handlers, propagate, level) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)


@pytest.fixture
def restore_library_loggers() -> Iterator[None]:
    with library_loggers_restored():
        yield


def _connect() -> None:
    raise ConnectionError(f"auth failed for redis://default:{SECRET}@cache:6379")


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"level"')]


def test_library_and_kombu_lines_are_json_with_the_run_keys_and_no_password(
    restore_library_loggers,
):
    stream = io.StringIO()
    logger = Logger(service=f"checker-{uuid.uuid4().hex[:6]}", stream=stream)
    route_library_logs(logger, secrets=[SECRET])
    route_library_logs(logger, secrets=[SECRET])  # a warm invocation: nothing doubles
    bind_run(logger, target="billing", mode="check", owner="run-abc", scheduled_time="T")

    logging.getLogger("oomcheck.sources.broker").warning("scan stopped at %d keys", 500)
    logging.getLogger("kombu.connection").error(
        "cannot connect to redis://:%s@cache:6379/0", SECRET
    )
    try:
        _connect()
    except ConnectionError:
        logging.getLogger("celery.app").exception("broker down")
    logger.info("run finished")

    lines = _lines(stream.getvalue())
    assert [line["name"] for line in lines] == [
        "oomcheck.sources.broker",
        "kombu.connection",
        "celery.app",
        logger.name,
    ]
    for line in lines:
        assert line["target"] == "billing" and line["mode"] == "check", line
        assert line["run_owner"] == "run-abc" and line["scheduled_time"] == "T", line
    assert lines[0]["message"] == "scan stopped at 500 keys"
    assert SECRET not in stream.getvalue()
    assert lines[1]["message"] == "cannot connect to redis://:***@cache:6379/0"
    assert "ConnectionError: auth failed for redis://default:***@cache:6379" in lines[2]["message"]
