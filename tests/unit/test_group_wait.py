"""Grouping like Alertmanager's: opens of one kind, severity and cause wait OOMCHECK_GROUP_WAIT
for the others, then go out as one message; without it, the opens of one run are one message."""

from __future__ import annotations

import pytest

from oomcheck.alerting.outbox import batches
from oomcheck.config.settings import SettingsError, from_env
from oomcheck.model import Action, Cause, PendingAlert
from tests.unit.incidents import T0, incident, state_of


def _ids(found):
    return [[i.id for i in b.incidents] for b in found]


def test_a_flood_of_opens_in_one_run_is_one_message_without_a_wait():
    flood = state_of(*(incident(i, tasks=1) for i in range(50)))
    [message] = batches(flood, now=T0)
    assert len(message.incidents) == 50


def test_opens_of_later_runs_wait_and_join_the_group():
    # Given a death, and two more of the same kind 20 s and 40 s later, with a 60 s wait
    state = state_of(
        incident(1, opened_at=T0),
        incident(2, opened_at=T0 + 20),
        incident(3, opened_at=T0 + 40),
        incident(4, opened_at=T0 + 40, cause=Cause.KILLED, exit_code=None),
    )
    # When the runs before the wait is over deliver, nothing goes out
    assert batches(state, group_wait_s=60, now=T0 + 59) == []
    # Then once the oldest has waited, the three OOM kills go out together; the SIGKILL waits
    # for its own group's wait
    assert _ids(batches(state, group_wait_s=60, now=T0 + 60)) == [
        ["inc-0001", "inc-0002", "inc-0003"]
    ]
    assert _ids(batches(state, group_wait_s=60, now=T0 + 100)) == [
        ["inc-0001", "inc-0002", "inc-0003"],
        ["inc-0004"],
    ]
    # Without a wait each run's opens are a message of their own
    assert len(batches(state, now=T0 + 100)) == 4


def test_the_wait_holds_only_opens():
    reminder = incident(1, pending=(PendingAlert(Action.REMIND, T0),))
    assert _ids(batches(state_of(reminder), group_wait_s=600, now=T0)) == [["inc-0001"]]


def test_the_wait_is_a_setting():
    assert from_env({"OOMCHECK_BROKER_URL": "memory://"}).group_wait_s == 0
    assert (
        from_env({"OOMCHECK_BROKER_URL": "memory://", "OOMCHECK_GROUP_WAIT": "30"}).group_wait_s
        == 30
    )
    with pytest.raises(SettingsError, match="OOMCHECK_GROUP_WAIT must be a number of seconds"):
        from_env({"OOMCHECK_BROKER_URL": "memory://", "OOMCHECK_GROUP_WAIT": "-1"})
