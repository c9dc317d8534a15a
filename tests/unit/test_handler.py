"""The Lambda handler: event in, report out, EMF metrics printed, adapters built once."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from tests.unit.test_lambda_logging import library_loggers_restored
from tests.unit.test_runner import Clock, FakeControl, FakeResults, FlakyPublisher, _deps

APP = Path(__file__).resolve().parents[2] / "functions" / "checker" / "app.py"


@dataclass
class Context:
    function_name: str = "oomcheck-checker"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:oomcheck-checker"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def handler_module(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "oomcheck-test")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "oomcheck")
    spec = importlib.util.spec_from_file_location("oomcheck_checker_app", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "oomcheck_checker_app", module)
    spec.loader.exec_module(module)
    control = FakeControl()
    control.add("celery@w1", 10)
    module._deps = _deps(tmp_path, control, FakeResults(), FlakyPublisher(0), Clock())
    return module


def _emf(output: str) -> list[dict]:
    blobs = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs


def test_scheduled_event_runs_a_check_and_emits_metrics(handler_module, capsys):
    body = handler_module.handler(
        {"mode": "check", "scheduled_time": "2026-11-24T10:00:00Z"}, Context()
    )
    assert body["mode"] == "check" and body["schema"] == 1
    assert [w["name"] for w in body["workers"]] == ["celery@w1"]
    # (the container's first invocation also prints the ColdStart metric, in a blob of its own)
    [metrics] = [b for b in _emf(capsys.readouterr().out) if "WorkersAlive" in b]
    assert metrics["WorkersAlive"] == [1.0] and metrics["Findings"] == [0.0]
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "oomcheck-test"


def test_audit_event_returns_the_read_only_report(handler_module):
    body = handler_module.handler({"mode": "audit"}, Context())
    assert body["mode"] == "audit" and "incidents" in body and body["alerts"] == []


def test_watch_event_is_bounded_by_the_remaining_time(handler_module, monkeypatch):
    monkeypatch.setattr(handler_module, "_WATCH_MARGIN_S", 29.5)  # leaves 0.5 s: one check
    body = handler_module.handler({"mode": "watch", "duration_s": 50}, Context())
    assert body["mode"] == "watch" and body["stats"]["runs"] == 1


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_bad_event_is_a_clear_error(handler_module):
    with pytest.raises(ValueError, match="unknown mode"):
        handler_module.handler({"mode": "nuke"}, Context())


def test_the_run_must_end_before_the_lambda_timeout(handler_module, monkeypatch):
    seen = []
    real = handler_module.run_once

    def spy(deps, mode, deadline, **kwargs):
        seen.append(deadline.remaining())
        return real(deps, mode, deadline, **kwargs)

    monkeypatch.setattr(handler_module, "run_once", spy)
    handler_module.handler({"mode": "check"}, Context())
    # 30 s left in the invocation, 1 s of it kept for the metrics and the return
    [remaining] = seen
    assert 28.5 < remaining <= 29.0


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"level"')]


def test_the_handler_binds_the_run_to_library_lines_and_counts_a_cold_start(
    capsys, handler_module, monkeypatch
):
    cold_start.reset_cold_start_flag()
    stream = io.StringIO()
    # the handler's logger writes to the stdout of when it was first made: here, to a buffer
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", stream)
    original = handler_module.run_once

    def logging_run(deps: Any, mode: str, deadline: Any, **kwargs: Any) -> Any:
        logging.getLogger("kombu.connection").warning("connection lost, retrying")
        return original(deps, mode, deadline, **kwargs)

    monkeypatch.setattr(handler_module, "run_once", logging_run)
    with library_loggers_restored():
        handler_module.handler(
            {"mode": "check", "scheduled_time": "2026-11-24T10:00:00Z"}, Context()
        )
        handler_module.handler({"mode": "check"}, Context())
    out = capsys.readouterr().out

    kombu = [line for line in _json_lines(stream.getvalue()) if line["name"] == "kombu.connection"]
    assert len(kombu) == 2
    first, second = kombu
    assert first["mode"] == "check" and first["target"] == "default"
    assert first["run_owner"] == handler_module._deps.owner
    assert first["scheduled_time"] == "2026-11-24T10:00:00Z"
    assert first["function_request_id"] == "req-1"
    assert second.get("scheduled_time") is None  # each invocation binds its own
    colds = [blob for blob in _emf(out) if "ColdStart" in blob]
    assert len(colds) == 1 and colds[0]["ColdStart"] == [1.0]
