"""Statuses, delivery outcomes and the mode stay typed until the report (JSON, table) or the
handler's log says them in words; the words are the report contract's."""

from __future__ import annotations

import io
import json

import pytest

from oomcheck.alerting.render import PublishError
from oomcheck.detect import text
from oomcheck.model import Action, Delivery, Kind, Mode, SourceState, SourceStatus
from oomcheck.report.document import AlertRecord, Report, source_text
from oomcheck.report.table import render_table
from tests.unit.incidents import T0
from tests.unit.test_handler import Context, _emf, handler_module  # noqa: F401 - fixture
from tests.unit.test_runner import _death_setup


@pytest.mark.parametrize(
    ("status", "said"),
    [
        pytest.param(SourceStatus(SourceState.OK), "ok", id="ok"),
        pytest.param(
            SourceStatus(SourceState.OK, "sns:arn:aws:sns:us-east-1:1:t"),
            "sns:arn:aws:sns:us-east-1:1:t",
            id="ok-names-the-channel",
        ),
        pytest.param(
            SourceStatus(SourceState.OFF, "no log groups configured"),
            "off: no log groups configured",
            id="off",
        ),
        pytest.param(
            SourceStatus(SourceState.ERROR, "ConnectionError: refused"),
            "error: ConnectionError: refused",
            id="error",
        ),
        pytest.param(SourceStatus(SourceState.ERROR), "error", id="error-without-detail"),
        pytest.param(
            SourceStatus(SourceState.BUSY, "held by run-1; this run is read-only"),
            "busy: held by run-1; this run is read-only",
            id="busy",
        ),
        pytest.param(
            SourceStatus(SourceState.LOST, "taken by run-2"),
            "lost lease: taken by run-2",
            id="lost-lease",
        ),
    ],
)
def test_a_status_is_said_as_the_report_contract_says(status, said):
    assert source_text(status) == said


def _alert(outcome: Delivery, reason: str | None) -> AlertRecord:
    return AlertRecord(
        "inc-1", Kind.WORKER_LOST, Action.OPEN, "[oomcheck] CRITICAL: w died", outcome, reason
    )


def _report(**fields) -> Report:
    base = {
        "mode": Mode.CHECK,
        "checked_at": T0,
        "duration_ms": 5,
        "workers": (),
        "findings": (),
        "sources": {"inspect": SourceStatus(SourceState.OK)},
        "stats": {},
    }
    return Report(**{**base, **fields})


def test_the_json_says_each_delivery_outcome_as_before():
    report = _report(
        alerts=(
            _alert(Delivery.PUBLISHED, None),
            _alert(Delivery.FAILED, "sns publish: Throttling"),
            _alert(Delivery.DEFERRED, "sns publish: Throttling"),
            _alert(Delivery.UNDELIVERABLE, "sns publish: InvalidParameter"),
        )
    )
    said = [(a["published"], a.get("error")) for a in report.to_json()["alerts"]]
    assert said == [
        (True, None),
        (False, "sns publish: Throttling"),
        (False, "deferred: sns publish: Throttling"),
        (False, "undeliverable: sns publish: InvalidParameter"),
    ]
    first = report.to_json()["alerts"][0]
    assert first == {
        "incident_id": "inc-1",
        "kind": "worker_lost",
        "action": "open",
        "subject": "[oomcheck] CRITICAL: w died",
        "published": True,
    }


def test_mode_and_sources_are_strings_in_the_json_and_the_table():
    report = _report(
        mode=Mode.AUDIT,
        sources={
            "inspect": SourceStatus(SourceState.OK),
            "exits": SourceStatus(SourceState.OFF, "no log groups configured"),
            "alerts": SourceStatus(SourceState.OK, "printed (no topic configured)"),
        },
    )
    body = json.loads(json.dumps(report.to_json()))
    assert body["mode"] == "audit" and "incidents" in body
    assert body["sources"] == {
        "inspect": "ok",
        "exits": "off: no log groups configured",
        "alerts": "printed (no topic configured)",
    }
    lines = render_table(report).splitlines()
    assert lines[0].startswith("oomcheck audit at ")
    assert lines[1] == (
        "sources: inspect ok, exits off: no log groups configured, "
        "alerts printed (no topic configured)"
    )


@pytest.mark.parametrize(
    ("inspect", "code"),
    [
        pytest.param(SourceStatus(SourceState.OK), 0, id="ok"),
        pytest.param(SourceStatus(SourceState.OFF, "not configured"), 0, id="off-is-no-failure"),
        pytest.param(SourceStatus(SourceState.ERROR, "timeout"), 69, id="error-could-not-check"),
    ],
)
def test_only_a_failed_source_makes_the_could_not_check_code(inspect, code):
    assert _report(sources={"inspect": inspect}).exit_code == code
    assert _report(sources={"results": inspect}).exit_code == code


def test_every_kind_with_a_headline_has_a_group_headline():
    # a kind alerted alone but without group words would read "3 x kind" when three open at once
    assert set(text.HEADLINES) == set(text.GROUP_HEADLINES)
    assert text.headline(Kind.WORKER_DEPARTED) == "worker_departed"
    assert text.group_headline(Kind.WORKER_DEPARTED) == "{n} x worker_departed"


class Refusing:
    """SNS refusing every message itself (both forms): undeliverable, never retried."""

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> str:
        return "sns:arn:aws:sns:us-east-1:123456789012:oomcheck"

    def publish(self, message: object) -> str:
        self.calls += 1
        raise PublishError("sns publish: InvalidParameter", permanent=True)


def test_the_handler_logs_and_counts_an_undeliverable_alert(
    handler_module,  # noqa: F811 - the fixture, by name
    tmp_path,
    capsys,
    monkeypatch,
):
    # Given a worker that died since the last check, and SNS refusing the alert for good
    deps, *_ = _death_setup(tmp_path)
    deps.publisher = refusing = Refusing()
    handler_module._deps = deps
    stream = io.StringIO()
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", stream)
    # When the handler runs a check
    body = handler_module.handler({"mode": "check"}, Context())
    # Then the report says so in the contract's words
    [alert] = body["alerts"]
    assert alert["published"] is False
    assert alert["error"] == "undeliverable: sns publish: InvalidParameter"
    assert body["sources"]["alerts"] == "error: undeliverable: sns publish: InvalidParameter"
    assert refusing.calls == 2  # the full form, then the reduced one
    # and the log has the line the runbook (and the alarm's description) point to
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    [line] = [e for e in logged if e["message"] == "alert undeliverable"]
    assert line["incident_id"] == alert["incident_id"] and line["action"] == "open"
    assert line["error"] == alert["error"]
    # and the metrics count it, and the alerts source as failed
    [metrics] = [b for b in _emf(capsys.readouterr().out) if "AlertsUndeliverable" in b]
    assert metrics["AlertsUndeliverable"] == [1.0] and metrics["SourceErrors"] == [1.0]
