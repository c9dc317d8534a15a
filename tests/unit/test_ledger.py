"""The incident ledger as a transition table: what each signal or resolution does to an incident,
and when a message is queued."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomcheck.detect import FAMILIES, context
from oomcheck.detect.carried import Carried
from oomcheck.detect.ledger import incident_id_for, material_change, settle
from oomcheck.detect.signals import Outcome, Resolution, Signal
from oomcheck.model import (
    Action,
    Cause,
    Finding,
    Incident,
    IncidentKey,
    Kind,
    PendingAlert,
    Policy,
    Severity,
    State,
    TaskFate,
    Verdict,
)
from tests.unit.scenario import T0, obs

KEY = IncidentKey(Kind.WORKER_LOST, "celery@a:1000")
LOST = Finding(kind=Kind.WORKER_LOST, severity=Severity.CRITICAL, worker="celery@a", key=KEY)
FATE = TaskFate(id="t1", name="app.work", state="STARTED", started_at=None, verdict=Verdict.LOST)


def _incident(
    *,
    sent: int = 1,
    pending: tuple[PendingAlert, ...] = (),
    opened: float = T0 - 600,
    last_alert: float | None = T0 - 600,
) -> Incident:
    return Incident(
        id="inc-1",
        key=KEY,
        kind=Kind.WORKER_LOST,
        opened_at=opened,
        finding=replace(LOST, incident_id="inc-1", first_seen=opened),
        pending=pending,
        alerts_sent=sent,
        last_alert_at=last_alert,
    )


def _settle(
    incidents: list[Incident], *outcomes: Outcome, policy: Policy | None = None, workers=()
):
    state = State(incidents={i.id: i for i in incidents})
    ctx = context.build(state, obs(T0, list(workers)), policy or Policy(), T0)
    return settle(ctx, outcomes)


def _out(*, signals=(), resolutions=(), judged=True, held=()) -> Outcome:
    return Outcome(
        frozenset({Kind.WORKER_LOST}),
        judged=judged,
        signals=tuple(signals),
        resolutions=tuple(resolutions),
        held=frozenset(held),
        gone=lambda key: f"{key.subject} is no longer seen",
    )


OOM = replace(LOST, cause=Cause.OOM_KILLED, exit_code=137)


@pytest.mark.parametrize(
    ("incident", "outcome", "closed", "pending"),
    [
        pytest.param(None, _out(signals=[Signal(LOST)]), False, ["open"], id="new-signal-opens"),
        pytest.param(
            _incident(),
            _out(signals=[Signal(LOST)]),
            False,
            [],
            id="same-signal-refreshes-silently",
        ),
        pytest.param(
            _incident(), _out(signals=[Signal(OOM)]), False, ["update"], id="cause-known-updates"
        ),
        pytest.param(
            _incident(),
            _out(signals=[Signal(replace(LOST, tasks=(FATE,)))]),
            False,
            ["update"],
            id="new-victim-updates",
        ),
        pytest.param(
            _incident(sent=0, pending=(PendingAlert(Action.OPEN, T0 - 1),)),
            _out(signals=[Signal(OOM)]),
            False,
            ["open"],
            id="change-folds-into-unsent-open",
        ),
        pytest.param(
            _incident(pending=(PendingAlert(Action.UPDATE, T0 - 1, note="now known: killed"),)),
            _out(signals=[Signal(replace(LOST, tasks=(FATE,)))]),
            False,
            ["update"],
            id="second-change-merges-into-pending-update",
        ),
        pytest.param(
            _incident(),
            _out(resolutions=[Resolution(KEY, "back")]),
            True,
            ["resolve"],
            id="resolution-closes-with-notice",
        ),
        pytest.param(
            _incident(sent=0, pending=(PendingAlert(Action.OPEN, T0 - 1),)),
            _out(resolutions=[Resolution(KEY, "back")]),
            True,
            ["open", "resolve"],
            id="resolved-before-sent-sends-both",
        ),
        pytest.param(_incident(), _out(judged=False), False, [], id="not-judged-is-held"),
        pytest.param(_incident(), _out(held=[KEY]), False, [], id="held-by-its-family"),
        pytest.param(
            _incident(last_alert=T0 - 4000),
            _out(judged=False),
            False,
            ["remind"],
            id="held-and-due-reminds",
        ),
        pytest.param(_incident(), _out(), True, ["resolve"], id="judged-and-unmentioned-resolves"),
        pytest.param(
            _incident(opened=T0 - 90_000),
            _out(signals=[Signal(LOST)]),
            True,
            ["resolve"],
            id="expired-closes",
        ),
    ],
)
def test_transition(incident, outcome, closed, pending):
    incidents, findings = _settle([incident] if incident else [], outcome)
    [after] = [i for i in incidents.values() if i.key == KEY]
    assert after.is_open is not closed
    assert [p.action.value for p in after.pending] == pending
    if closed:
        assert any(f.kind == Kind.WORKER_RECOVERED for f in findings)
    else:
        assert [f.incident_id for f in findings if f.kind == Kind.WORKER_LOST] == [after.id]


def test_update_note_says_what_is_now_known():
    incidents, _ = _settle([_incident()], _out(signals=[Signal(OOM)]))
    [update] = incidents["inc-1"].pending
    assert update.note == "now known: OOM-killed, exit 137"
    assert update.seq == 1  # the incident's second message


def test_unchanged_incident_is_the_same_object():
    incident = _incident()
    incidents, _ = _settle([incident], _out(signals=[Signal(LOST)]))
    assert incidents["inc-1"] is incident


def test_a_resolution_never_beats_a_signal_for_the_same_key_in_one_run():
    incidents, _ = _settle(
        [_incident()], _out(signals=[Signal(LOST)], resolutions=[Resolution(KEY, "x")])
    )
    assert incidents["inc-1"].is_open


def test_a_family_that_judged_and_no_longer_mentions_its_incident_resolves_it_in_its_words():
    # Given an open worker_lost incident, when its family judged this run and said nothing of it
    incidents, findings = _settle([_incident()], _out())
    # Then the ledger closes it with the family's own words, and tells on-call once
    after = incidents["inc-1"]
    assert not after.is_open and after.resolution == "celery@a:1000 is no longer seen"
    assert [p.action for p in after.pending] == [Action.RESOLVE]
    recovered = [f for f in findings if f.kind == Kind.WORKER_RECOVERED]
    assert [f.summary for f in recovered] == [
        "resolved worker_lost: celery@a:1000 is no longer seen"
    ]


def test_a_family_whose_inputs_failed_keeps_its_incident_open_and_reported():
    # Given an open worker_lost incident, when its family could not judge (a source failed)
    incident = _incident()
    incidents, findings = _settle([incident], _out(judged=False))
    # Then the incident stays as it was, and is still reported
    assert incidents["inc-1"] is incident
    assert [f.incident_id for f in findings] == ["inc-1"]


def test_a_family_resolves_only_the_kinds_it_owns():
    # Given an open worker_lost incident, when only a family of other kinds judged
    other = Outcome(frozenset({Kind.TASK_STALLED}))
    incidents, _ = _settle([_incident()], other)
    # Then the incident is held, not resolved by a stranger
    assert incidents["inc-1"].is_open


def test_an_info_finding_of_the_same_key_is_a_mention():
    # Given an open incident, when its family reports it this run as info only
    info = replace(LOST, severity=Severity.INFO)
    incidents, _ = _settle([_incident()], _out(signals=[Signal(info)]))
    # Then the family has mentioned it: it stays open
    assert incidents["inc-1"].is_open


def test_event_kinds_close_when_opened():
    key = IncidentKey(Kind.CHILD_KILLED, "celery@a:t1")
    finding = Finding(kind=Kind.CHILD_KILLED, severity=Severity.WARNING, worker="celery@a", key=key)
    incidents, _ = _settle([], Outcome(frozenset({Kind.CHILD_KILLED}), signals=(Signal(finding),)))
    [incident] = incidents.values()
    assert not incident.is_open and [p.action.value for p in incident.pending] == ["open"]


def test_info_signals_open_nothing():
    info = replace(LOST, severity=Severity.INFO)
    incidents, findings = _settle([], _out(signals=[Signal(info)]))
    assert incidents == {} and findings == [info]


def test_incident_ids_are_stable_for_a_first_occurrence():
    assert incident_id_for(KEY, {}, T0) == incident_id_for(KEY, {}, T0 + 999)
    taken = {incident_id_for(KEY, {}, T0): _incident()}
    assert incident_id_for(KEY, taken, T0) != incident_id_for(KEY, {}, T0)


@pytest.mark.parametrize(
    ("before", "after", "note"),
    [
        pytest.param(LOST, LOST, None, id="nothing"),
        pytest.param(LOST, OOM, "now known: OOM-killed, exit 137", id="cause"),
        pytest.param(OOM, LOST, None, id="cause-forgotten-is-not-news"),
        pytest.param(LOST, replace(LOST, exit_code=1), "now known: exit 1", id="exit-code"),
        pytest.param(
            LOST, replace(LOST, tasks=(FATE,)), "1 more task(s) died with it", id="victims"
        ),
        pytest.param(
            replace(LOST, tasks=(FATE,)),
            replace(LOST, tasks=(replace(FATE, verdict=Verdict.REDELIVERED),)),
            None,
            id="verdict-moves-on",
        ),
    ],
)
def test_material_change(before, after, note):
    assert material_change(before, after) == note


def test_every_incident_kind_has_exactly_one_family_to_close_it():
    # Given an empty run, when every family judges it
    ctx = context.build(State(), obs(T0, []), Policy(), T0)
    owned = [kind for family in FAMILIES for kind in family(ctx, Carried.start(State())).kinds]
    # Then each kind that can be an incident is owned once (nobody else may sweep it)
    assert sorted(owned) == sorted(set(Kind) - {Kind.WORKER_RECOVERED, Kind.CONFIG_RISK})
