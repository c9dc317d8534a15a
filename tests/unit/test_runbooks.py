"""Runbook links: every alert carries its kind's runbook, on every channel."""

from __future__ import annotations

import json

import pytest

from oomcheck.alerting.chat import chat_message, chat_request
from oomcheck.alerting.eventbridge import put_events_entry
from oomcheck.alerting.outbox import batches
from oomcheck.alerting.render import fit, reduced, sns_request
from oomcheck.alerting.runbooks import Runbooks
from oomcheck.config.settings import SettingsError, from_env
from oomcheck.model import Action, Kind, PendingAlert
from tests.unit.incidents import T0, incident, state_of

ALL = "https://wiki.example/oncall/oomcheck"
POISON = "https://wiki.example/oncall/poison-tasks"
BOOKS = Runbooks(ALL, {"poison_task": POISON})


def _message(kind: Kind = Kind.WORKER_LOST, action: Action = Action.OPEN):
    one = incident(1, tasks=2, kind=kind, pending=(PendingAlert(action, T0),))
    return fit(batches(state_of(one))[0], T0, BOOKS)


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_every_channel_carries_the_runbook(action):
    message = _message(action=action)
    body = json.loads(sns_request(message)["Message"])
    # email: the text's own section
    assert f"RUNBOOK\n  {ALL}" in body["email"]
    # machines on the alert topic, and EventBridge's detail (PagerDuty's links[])
    machine = json.loads(body["default"])
    assert machine["runbook_url"] == ALL
    assert machine["links"] == [{"href": ALL, "text": "Runbook"}]
    detail = json.loads(put_events_entry(message, "oncall")["Detail"])
    assert detail["links"] == [{"href": ALL, "text": "Runbook"}]
    # chat: in the notification's description
    assert f"Runbook: {ALL}" in chat_message(message)["content"]["description"]
    assert ALL in chat_request(message)["Message"]


def test_a_kind_with_its_own_runbook_gets_that_one():
    message = _message(Kind.POISON_TASK)
    assert message.payload["runbook_url"] == POISON
    assert POISON in message.text and ALL not in message.text


def test_the_reduced_form_keeps_the_runbook():
    small = reduced(batches(state_of(incident(1, tasks=3)))[0], T0, BOOKS)
    assert small.payload["reduced"] is True
    assert small.payload["links"] == [{"href": ALL, "text": "Runbook"}]


def test_without_a_runbook_alerts_are_as_before():
    message = fit(batches(state_of(incident(1)))[0], T0)
    assert "runbook_url" not in message.payload and "links" not in message.payload
    assert "RUNBOOK" not in message.text
    assert "Runbook" not in chat_message(message)["content"]["description"]


def test_runbook_settings_are_read_and_checked():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "memory://",
            "OOMCHECK_RUNBOOK_URL": ALL,
            "OOMCHECK_RUNBOOK_URLS": json.dumps({"poison_task": POISON}),
        }
    )
    assert settings.runbooks == BOOKS


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"OOMCHECK_RUNBOOK_URL": "wiki/oomcheck"},
            "OOMCHECK_RUNBOOK_URL must be an http:// or https:// URL",
            id="not-a-url",
        ),
        pytest.param(
            {"OOMCHECK_RUNBOOK_URLS": '{"worker_died": "https://wiki.example/x"}'},
            "OOMCHECK_RUNBOOK_URLS names 'worker_died', which is not a finding kind",
            id="unknown-kind",
        ),
        pytest.param(
            {"OOMCHECK_RUNBOOK_URLS": '["https://wiki.example/x"]'},
            "OOMCHECK_RUNBOOK_URLS must be a JSON object",
            id="not-an-object",
        ),
    ],
)
def test_bad_runbook_settings_are_one_line_errors(env, message):
    with pytest.raises(SettingsError, match=message) as info:
        from_env({"OOMCHECK_BROKER_URL": "memory://", **env})
    assert "\n" not in str(info.value)
