"""A check started by a death asks broker presence first and does not wait for the dead worker's
reply: the broadcast's reply count leaves out the workers whose connections are already gone."""

from __future__ import annotations

from typing import Any

from oomcheck.entry.arrivals import Arrival, Shape
from oomcheck.model import Cause, ExitEvidence, PidboxNames, Presence
from oomcheck.runner import run_once, watch
from oomcheck.sources.inspector import CeleryInspector
from oomcheck.sources.presence.brokers import RedisBrokerPresence
from tests.unit.test_runner import Clock, FakeApp, FakeControl, FakeResults, FlakyPublisher, _deps

A, B = "celery@ip-10-0-1-7", "celery@ip-10-0-1-8"


class GonePresence:
    """The broker's word: the workers in ``gone`` hold no connection any more. Records each
    question (the silent members asked about) in the control's call log, to order it against
    the broadcasts."""

    def __init__(self, control: FakeControl, gone: set[str], now: list[float] | None = None):
        self.control, self.gone = control, gone
        self.now = now
        self.asked: list[list[str]] = []

    def judge(self, members: Any) -> dict[str, Presence]:
        silent = sorted(m.name for m in members if not m.answered)
        self.asked.append(silent)
        self.control.calls.append(("presence", silent, None))
        return {n: Presence(n, n not in self.gone, "fake", None) for n in silent}

    def describe(self) -> str:
        return "fake"

    def pidbox_names(self) -> PidboxNames:
        return PidboxNames(frozenset())  # no newcomers in these fleets

    def shares(self, members: Any) -> dict[str, Any]:
        return {}

    def subscriptions(self) -> frozenset[str]:
        # B's subscription closes once it is gone (after the first check)
        return frozenset({"a"}) if B in self.gone else frozenset({"a", "b"})


def _fleet(tmp_path: Any) -> tuple[Any, FakeControl, Clock]:
    control, results, clock = FakeControl(), FakeResults(), Clock()
    control.add(A, 10)
    control.add(B, 20)
    deps = _deps(tmp_path, control, results, FlakyPublisher(0), clock)
    deps.presence = GonePresence(control, set())
    assert run_once(deps).exit_code == 0  # discovery: both on the roster
    control.calls.clear()
    return deps, control, clock


def _stats_calls(control: FakeControl) -> list[tuple[Any, ...]]:
    return [c for c in control.calls if c[0] == "stats"]


def test_a_check_after_a_closed_subscription_asks_presence_first_and_does_not_wait_for_the_dead(
    tmp_path,
):
    # Given two workers on the roster and a watch whose second poll sees B's subscription close
    deps, control, clock = _fleet(tmp_path)
    fake_time = [0.0]

    def sleep(seconds: float) -> None:
        fake_time[0] += seconds
        clock.now += seconds
        if fake_time[0] >= 1.0 and B in control.alive:  # B is killed at t=1 s
            control.alive.remove(B)
            deps.presence.gone.add(B)
            control.calls.clear()

    # When watch runs (interval 30 s, so only the closed subscription brings a check early)
    watch(deps, interval=30, duration=60, sleep=sleep, monotonic=lambda: fake_time[0])
    # Then the check that followed asked the broker about both first, before any broadcast
    first_question = control.calls.index(("presence", [A, B], None))
    broadcast = control.calls.index(_stats_calls(control)[0])
    assert first_question < broadcast
    # and its broadcast waited for one reply (A's), not two, and B was not re-pinged directly
    assert _stats_calls(control)[0] == ("stats", None, 1)
    assert not [c for c in _stats_calls(control) if c[1] == [B]]


def test_a_check_started_by_an_event_asks_about_the_worker_the_event_names(tmp_path):
    # Given two workers on the roster; B's container is stopped (OOM) and its event arrives
    deps, control, clock = _fleet(tmp_path)
    control.alive.remove(B)
    deps.presence.gone.add(B)
    clock.now += 5
    evidence = ExitEvidence(
        source="ecs",
        event_id="e1",
        at=clock.now - 1,
        cause=Cause.OOM_KILLED,
        exit_code=137,
        text="ecs: exitCode 137 OutOfMemoryError",
        hosts=("10.0.1.8",),
    )
    # When the check runs with the event
    report = run_once(deps, arrival=Arrival(Shape.SQS, evidence=(evidence,), events=1))
    # Then presence was asked about B alone first, the broadcast expected only A's reply,
    # and B was not re-pinged
    assert deps.presence.asked[0] == [B]
    assert _stats_calls(control) == [("stats", None, 1)]
    assert {f.kind.value for f in report.findings if f.worker == B} >= {"worker_lost"}


def test_a_suspect_that_answers_proves_the_listing_wrong_and_the_silent_ones_are_repinged():
    # Given a listing that (wrongly) shows both workers gone, while A is alive and B is dead
    control, clock = FakeControl(), Clock()
    control.add(A, 10)
    inspector = CeleryInspector("memory://", app=FakeApp(control), clock=clock)

    def probe(answered: Any, missing: Any) -> dict[str, Presence]:
        return {n: Presence(n, False, "fake: gone", None) for n in missing}

    # When both are suspects
    result = inspector.observe([A, B], discover=False, presence=probe, suspects=[A, B])
    # Then A's answer is kept, and B, judged gone by the same listing, is still re-pinged
    assert set(result.workers) == {A}
    assert ("stats", [B], 1) in control.calls
    assert result.missing == (B,)


def test_without_suspects_the_broadcast_waits_for_every_expected_worker():
    control, clock = FakeControl(), Clock()
    control.add(A, 10)
    control.add(B, 20)
    inspector = CeleryInspector("memory://", app=FakeApp(control), clock=clock)
    asked: list[Any] = []
    inspector.observe(
        [A, B], discover=False, presence=lambda a, m: asked.append(m) or {}, suspects=()
    )
    assert asked == []
    assert _stats_calls(control)[0] == ("stats", None, 2)


class ListingClient:
    def __init__(self) -> None:
        self.entries = [
            {"id": "7", "addr": "10.0.1.7:5000", "age": "9", "db": "0", "psub": "1"},
            {"id": "8", "addr": "10.0.1.8:5000", "age": "9", "db": "0", "psub": "1"},
            {"id": "9", "addr": "10.0.1.9:5000", "age": "9", "db": "0", "name": "oomcheck"},
        ]

    def client_list(self) -> list[dict[str, str]]:
        return self.entries


def test_watch_sees_one_subscription_close_among_many():
    # Given two workers' subscriptions and the checker's own connection
    client = ListingClient()
    presence = RedisBrokerPresence(client, 0)
    before = presence.subscriptions()
    # When one worker's subscription closes
    client.entries = [e for e in client.entries if e["id"] != "8"]
    after = presence.subscriptions()
    # Then the two listings differ by that connection alone (the checker's own never counts)
    assert before is not None and after is not None
    assert before - after == {"8"}
    assert after == {"7"}
