"""How a user asks for the history (issue 21): ``audit --since`` on the CLI, ``"since"`` in the
Lambda's audit payload, ``{"mode": "digest"}`` for the weekly digest, and the retention setting."""

from __future__ import annotations

import pytest

from oomcheck.cli import main
from oomcheck.config import parsers
from oomcheck.config.settings import SettingsError, from_env
from oomcheck.entry.invocation import InvocationError, parse_invocation
from oomcheck.model import Mode
from tests.unit.test_handler import Context, handler_module  # noqa: F401 - the fixture


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("7d", 604800.0), ("24h", 86400.0), ("90m", 5400.0), ("2w", 1209600.0), ("3600", 3600.0)],
)
def test_spans_read_as_a_person_writes_them(raw: str, seconds: float):
    assert parsers.span(raw) == seconds


@pytest.mark.parametrize("raw", ["", "0d", "-1d", "7x", "nan", "inf", "400d"])
def test_bad_spans_are_refused(raw: str):
    with pytest.raises(ValueError, match="must be a span"):
        parsers.span(raw)


def test_the_audit_payload_takes_since():
    assert parse_invocation({"mode": "audit", "since": "14d"}).since_s == 14 * 86400.0
    assert parse_invocation({"mode": "audit"}).since_s is None
    with pytest.raises(InvocationError, match="since must be a span"):
        parse_invocation({"mode": "audit", "since": "soon"})
    assert parse_invocation({"mode": "digest"}).mode is Mode.DIGEST


def test_a_bad_since_on_the_command_line_is_one_line_and_exit_64(capsys):
    assert main(["audit", "--since", "soon"]) == 64
    err = capsys.readouterr().err.strip()
    assert err.startswith("oomcheck: --since must be a span") and "\n" not in err


def test_history_retention_setting():
    env = {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0"}
    assert from_env(env).policy.history_retention_s == 30 * 86400.0
    assert from_env({**env, "OOMCHECK_HISTORY_RETENTION": "2w"}).policy.history_retention_s == (
        14 * 86400.0
    )
    with pytest.raises(SettingsError, match="OOMCHECK_HISTORY_RETENTION must be a span"):
        from_env({**env, "OOMCHECK_HISTORY_RETENTION": "forever"})


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_digest_event_sends_the_digest_and_runs_no_check(handler_module):  # noqa: F811
    body = handler_module.handler({"mode": "digest"}, Context())
    assert body["mode"] == "digest" and body["published"] is False
    assert body["subject"].startswith("[oomcheck] weekly digest default: 0 death(s)")


def test_the_audit_report_carries_the_history_block_and_a_check_does_not(tmp_path):
    from oomcheck.runner import run_once
    from tests.unit.test_runner import Clock, FakeControl, FakeResults, FlakyPublisher, _deps

    control = FakeControl()
    control.add("celery@w1", 10)
    deps = _deps(tmp_path, control, FakeResults(), FlakyPublisher(0), Clock())
    audit = run_once(deps, Mode.AUDIT, since_s=14 * 86400.0).to_json()
    assert audit["history"] == {"since_s": 14 * 86400.0, "tasks": [], "rising_memory": []}
    assert "history" not in run_once(deps, Mode.CHECK).to_json()
