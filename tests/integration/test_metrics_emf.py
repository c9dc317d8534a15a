"""The metrics of a real worker death, read back from the Lambda handler's log lines (EMF):
names, dimensions, units and values, as CloudWatch would extract them (issue 21)."""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from oomcheck.model import Kind, Verdict
from tests.integration.conftest import Fleet
from tests.unit.test_handler import Context

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "functions" / "checker" / "app.py"
EVENT = {"mode": "check", "scheduled_time": "2026-11-24T10:00:00Z"}


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch, fleet: Fleet) -> Any:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "oomcheck-emf-test")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "oomcheck-stack")
    spec = importlib.util.spec_from_file_location("oomcheck_checker_app_emf", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "oomcheck_checker_app_emf", module)
    spec.loader.exec_module(module)
    fleet.overrides = {"target": "shop"}
    module._deps = fleet.deps
    return module


def _metrics(output: str) -> dict[str, list[tuple[dict[str, str], str, float, dict[str, Any]]]]:
    """metric name -> [(dimensions, unit, value, the whole document)] of every EMF line."""
    found: dict[str, list[tuple[dict[str, str], str, float, dict[str, Any]]]] = {}
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        doc = json.loads(line)
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "oomcheck-emf-test"
        [dims] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            found.setdefault(metric["Name"], []).append(
                (
                    {d: doc[d] for d in dims},
                    metric["Unit"],
                    value[0] if isinstance(value, list) else value,
                    doc,
                )
            )
    return found


def _run(handler: Any, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict]:
    body = handler.handler(EVENT, Context())
    return body, _metrics(capsys.readouterr().out)


def test_a_real_death_is_counted_once_by_cause_with_its_victims(
    fleet: Fleet, handler: Any, capsys: pytest.CaptureFixture[str]
):
    # Given a worker running a plain task and an acks_late one, and a healthy check
    worker = fleet.start("emf@oomcheck-test", concurrency=2)
    plain = fleet.send("demo.sleepy", 120)
    late = fleet.send("demo.sleepy_late", 120)
    fleet.wait_started(plain, late)
    _, healthy = _run(handler, capsys)
    assert "WorkerDeaths" not in healthy
    assert healthy["OpenIncidents"] == [
        ({"target": "shop"}, "Count", 0.0, healthy["OpenIncidents"][0][3])
    ]
    assert healthy["WorkersAlive"][0][:3] == ({"service": "oomcheck-stack"}, "Count", 1.0)
    # When it is SIGKILLed and the next scheduled check runs
    worker.kill(signal.SIGKILL)
    worker.wait()
    body, seen = _run(handler, capsys)
    [lost] = [f for f in body["findings"] if f["kind"] == Kind.WORKER_LOST]
    # Then one death under its cause, the target as dimension
    [(dims, unit, value, _)] = seen["WorkerDeaths"]
    assert (dims, unit, value) == ({"target": "shop", "cause": lost["cause"]}, "Count", 1.0)
    # its victims: the plain task lost, the acks_late one waiting for redelivery
    verdicts = sorted(t["verdict"] for t in lost["tasks"])
    assert verdicts == sorted([Verdict.LOST.value, Verdict.AWAITING_REDELIVERY.value])
    assert seen["TasksLost"][0][:3] == ({"target": "shop"}, "Count", 1.0)
    assert seen["TasksRedelivered"][0][:3] == ({"target": "shop"}, "Count", 1.0)
    # task names travel as metadata, never as a dimension
    names = next(d for *_, d in (m for ms in seen.values() for m in ms) if "tasks" in d)["tasks"]
    assert names == ["demo.sleepy", "demo.sleepy_late"]
    assert all("task" not in dims for ms in seen.values() for dims, *_ in ms)
    assert seen["OpenIncidentsByKind"][0][:3] == (
        {"target": "shop", "kind": "worker_lost"},
        "Count",
        1.0,
    )
    assert seen["RunDuration"][0][1] == "Milliseconds"
    # And the next check, which only sees the same death again, counts no second one
    _, again = _run(handler, capsys)
    assert "WorkerDeaths" not in again and "TasksLost" not in again
    assert again["OpenIncidents"][0][2] == 1.0
