"""Delivery of the outbox: each message once, in time, whatever SNS and the store do."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from oomcheck.alerting import delivery
from oomcheck.alerting.outbox import SentJournal
from oomcheck.alerting.render import AlertMessage, PublishError
from oomcheck.deadline import Deadline
from oomcheck.model import Action, Delivery, PendingAlert, SourceState, SourceStatus, State
from oomcheck.store.base import StateError
from oomcheck.store.file import FileStateStore
from tests.unit.incidents import T0, incident, state_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Killed(BaseException):
    """The Lambda runtime ending the process mid-run: nothing after it runs."""


@dataclass
class Topic:
    """Records each accepted message; can be slow, refuse, fail or die on command."""

    clock: FakeClock
    seconds_per_publish: float = 0.0
    fail_with: PublishError | None = None
    refuse_unless_reduced: bool = False
    die_at: int | None = None  # the n-th publish (1-based) kills the process
    calls: int = 0
    accepted: list[AlertMessage] = field(default_factory=list)

    def describe(self) -> str:
        return "topic"

    def publish(self, message: AlertMessage) -> str:
        self.calls += 1
        self.clock.now += self.seconds_per_publish
        if self.die_at is not None and self.calls == self.die_at:
            raise Killed
        if self.fail_with is not None:
            raise self.fail_with
        if self.refuse_unless_reduced and not message.payload.get("reduced"):
            raise PublishError("sns publish: InvalidParameter", permanent=True)
        self.accepted.append(message)
        return f"m-{len(self.accepted)}"

    def sent_per_incident(self) -> Counter[str]:
        return Counter(i for m in self.accepted for i in m.incident_ids)


def _apart(n: int) -> State:
    """n incidents opened in different runs: n messages."""
    return state_of(*(incident(i, tasks=2, opened_at=T0 + i) for i in range(n)))


def _run(
    tmp_path: Any,
    topic: Topic,
    *,
    budget: float = 30.0,
    publish_s: float = 0.0,
    journal: SentJournal | None = None,
    store: Any = None,
    owner: str = "run-1",
    state: State | None = None,
) -> delivery.Committed:
    """One run's write half, on the state file; ``state``: what evaluation produced (default:
    what the file holds)."""
    store = store or FileStateStore(str(tmp_path / "state.json"))
    store.acquire(owner, T0, 60)
    loaded = store.load()
    journal = journal or SentJournal()
    box = delivery.Outbox(
        publisher=topic,
        store=store,
        owner=owner,
        retention_s=86400,
        deadline=Deadline.after(budget, topic.clock),
        publish_s=publish_s,
        finish_s=0.5,
        journal=journal,
    )
    try:
        return delivery.commit(box, loaded, journal.apply(state or loaded), T0)
    finally:
        store.abandon(owner)


def test_a_run_killed_mid_delivery_repeats_nothing_it_sent(tmp_path):
    # Given five alerts due, and a process that dies during the third publish
    topic = Topic(FakeClock(), die_at=3)
    with pytest.raises(Killed):
        _run(tmp_path, topic, state=_apart(5))
    assert len(topic.accepted) == 2
    # When the next run (a new process) delivers
    topic.die_at = None
    _run(tmp_path, topic)
    # Then every alert went out exactly once
    assert topic.sent_per_incident() == {f"inc-{i:04d}": 1 for i in range(5)}
    assert not any(
        i.pending for i in FileStateStore(str(tmp_path / "state.json")).load().incidents.values()
    )


def test_the_deadline_stops_publishing_and_later_runs_send_the_rest_once(tmp_path):
    # Given 120 alerts that cannot be grouped, and SNS taking 0.25 s per publish
    clock = FakeClock()
    topic = Topic(clock, seconds_per_publish=0.25)
    state = _apart(120)
    runs = 0
    # When each run has 5 s and keeps back a publish's worst case (1 s) and the finish (0.5 s)
    out = _run(tmp_path, topic, budget=5.0, publish_s=1.0, state=state)
    runs += 1
    first = len(topic.accepted)
    assert out.delivered.stopped == "the run's deadline is near"
    assert clock.now - 100.0 <= 5.0 - 0.5  # stopped in time to finish
    while len(topic.accepted) < 120 and runs < 20:
        _run(tmp_path, topic, budget=5.0, publish_s=1.0)
        runs += 1
    # Then each incident is sent exactly once, over several runs
    assert 10 <= first < 120
    assert topic.sent_per_incident() == {f"inc-{i:04d}": 1 for i in range(120)}
    deferred = [a for a in out.delivered.records if not a.published]
    assert len(deferred) == 120 - first
    assert {a.outcome for a in deferred} == {Delivery.DEFERRED}
    assert {a.error for a in deferred} == {"deferred: the run's deadline is near"}


def test_a_fleet_dying_at_once_is_one_message(tmp_path):
    topic = Topic(FakeClock())
    out = _run(tmp_path, topic, state=state_of(*(incident(i, tasks=3) for i in range(120))))
    assert len(topic.accepted) == 1 and out.delivered.messages == 1
    assert topic.sent_per_incident() == {f"inc-{i:04d}": 1 for i in range(120)}
    assert len(out.delivered.records) == 120 and all(a.published for a in out.delivered.records)


def test_a_failure_that_may_pass_keeps_the_alerts_in_order_for_the_next_run(tmp_path):
    topic = Topic(FakeClock(), fail_with=PublishError("sns publish: Throttling"))
    out = _run(tmp_path, topic, state=_apart(3))
    # one attempt, not three: the others wait behind it
    assert topic.calls == 1
    assert [(a.incident_id, a.published) for a in out.delivered.records] == [
        ("inc-0000", False),
        ("inc-0001", False),
        ("inc-0002", False),
    ]
    # the first was tried and failed; the others were not tried, deferred behind it
    assert [a.outcome for a in out.delivered.records] == [
        Delivery.FAILED,
        Delivery.DEFERRED,
        Delivery.DEFERRED,
    ]
    assert out.delivered.records[0].error == "sns publish: Throttling"
    assert out.delivered.records[1].error == "deferred: sns publish: Throttling"
    saved = FileStateStore(str(tmp_path / "state.json")).load()
    assert saved.incidents["inc-0000"].pending[0].attempts == 1
    topic.fail_with = None
    _run(tmp_path, topic)
    assert [m.incident_id for m in topic.accepted] == ["inc-0000", "inc-0001", "inc-0002"]


def test_a_refused_message_is_sent_in_its_reduced_form(tmp_path):
    topic = Topic(FakeClock(), refuse_unless_reduced=True)
    out = _run(tmp_path, topic, state=_apart(1))
    [message] = topic.accepted
    assert message.payload["reduced"] is True and "inc-0000" in message.text
    assert out.delivered.records[0].published


def test_a_message_sns_never_accepts_is_dropped_as_undeliverable_and_the_rest_go_on(tmp_path):
    topic = Topic(
        FakeClock(), fail_with=PublishError("sns publish: InvalidParameter", permanent=True)
    )
    state = _apart(2)
    out = _run(tmp_path, topic, state=state)
    assert topic.calls == 4  # each: the full form, then the reduced one
    assert out.delivered.undeliverable == 2
    assert [a.outcome for a in out.delivered.records] == [Delivery.UNDELIVERABLE] * 2
    assert all(
        (a.error or "").startswith("undeliverable: sns publish: InvalidParameter")
        for a in out.delivered.records
    )
    # dropped from the outbox, not retried by every run
    topic.fail_with = None
    _run(tmp_path, topic)
    assert topic.calls == 4 and topic.accepted == []


class FailingSaves(FileStateStore):
    """A state file whose saves fail from the ``fail_from``-th on (a throttled table)."""

    def __init__(self, path: str, fail_from: int) -> None:
        super().__init__(path)
        self.saves = 0
        self.fail_from = fail_from

    def save(self, owner: str, before: State, after: State, retention_s: float) -> Any:
        self.saves += 1
        if self.saves >= self.fail_from:
            raise StateError("dynamodb transact_write_items: ThrottlingException")
        return super().save(owner, before, after, retention_s)


def test_a_store_failure_right_after_a_publish_does_not_send_it_again(tmp_path):
    # Given the first save (the new incidents) succeeds and the sent mark's save fails
    topic = Topic(FakeClock())
    journal = SentJournal()
    path = str(tmp_path / "state.json")
    out = _run(tmp_path, topic, journal=journal, store=FailingSaves(path, 2), state=_apart(2))
    assert out.status.failed
    assert out.status.detail.startswith("dynamodb transact_write_items: ThrottlingException")
    # publishing stopped: no more marks could be recorded
    assert len(topic.accepted) == 1 and len(journal.marks) == 1
    # When the next run of the same process loads the state without the mark
    second = _run(tmp_path, topic, journal=journal)
    # Then the sent alert is not sent again, the other one is, and the marks are saved
    assert topic.sent_per_incident() == {"inc-0000": 1, "inc-0001": 1}
    assert second.status == SourceStatus(SourceState.OK) and journal.marks == []


def test_an_update_goes_out_after_the_open_in_the_same_run(tmp_path):
    note = "now known: OOM-killed, exit 137"
    opened = incident(
        1,
        pending=(PendingAlert(Action.OPEN, T0), PendingAlert(Action.UPDATE, T0, note=note, seq=1)),
    )
    topic = Topic(FakeClock())
    _run(tmp_path, topic, state=state_of(opened))
    assert [m.action for m in topic.accepted] == [Action.OPEN, Action.UPDATE]
    assert topic.accepted[1].subject.endswith("- " + note)
    assert len({m.dedup_key for m in topic.accepted}) == 2
