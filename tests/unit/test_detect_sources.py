"""The sources and evidence rule families: source_unavailable counted run over run; OOM evidence
that no worker claims; orphans of workers nobody knew."""

from __future__ import annotations

from dataclasses import replace

from oomcheck.model import Kind, Presence, Severity
from tests.unit.scenario import T0, Replay, actions, kernel_kill, kinds, obs, only, snap, started

W = "celery@ip-10-0-1-5"


def test_source_failure_is_info_until_it_persists_then_resolves_when_back():
    replay = Replay()
    for i in range(3):
        findings = replay.step(obs(T0 + i, [snap(W, at=T0 + i)], errors={"exits": "AccessDenied"}))
        expected = Severity.WARNING if i == 2 else Severity.INFO
        assert only(findings, Kind.SOURCE_UNAVAILABLE).severity == expected
    assert replay.state.source_failures == {"exits": 3}
    findings = replay.step(obs(T0 + 3, [snap(W, at=T0 + 3)]))
    assert "works again" in only(findings, Kind.WORKER_RECOVERED).summary
    assert replay.state.source_failures == {}
    assert actions(replay) == ["open", "resolve"]


def test_unclaimed_oom_evidence_is_one_finding_and_is_used_once():
    replay = Replay()
    line = kernel_kill(4321, host="db-host")
    assert kinds(replay.step(obs(T0 + 10, [snap(W)], exits=[line]))) == ["oom_kill"]
    assert kinds(replay.step(obs(T0 + 20, [snap(W, at=T0 + 20)], exits=[line]))) == []
    assert actions(replay, "oom_kill") == ["open"]


OLD = T0 - 4000  # a STARTED record written over an hour ago: past the default busy limit


def test_orphans_resolve_when_their_records_are_gone():
    replay = Replay()
    findings = replay.step(
        obs(T0, [snap(W)], started_=[started("o1", "celery@gone", 7, written=OLD)])
    )
    assert only(findings, Kind.TASK_ORPHANED).tasks[0].id == "o1"
    findings = replay.step(obs(T0 + 60, [snap(W, at=T0 + 60)], started_=[]))
    assert only(findings, Kind.WORKER_RECOVERED).summary.endswith(
        "no orphaned STARTED record remains"
    )
    # while the result backend is down, nothing is judged
    replay2 = Replay()
    replay2.step(obs(T0, [snap(W)], started_=[started("o1", "celery@gone", 7, written=OLD)]))
    findings = replay2.step(
        obs(T0 + 60, [snap(W, at=T0 + 60)], started_=None, errors={"results": "down"})
    )
    assert Kind.TASK_ORPHANED in {f.kind for f in findings}


def test_a_silent_stranger_the_broker_cannot_tell_apart_is_not_gone_within_its_tasks_limit():
    # Given a STARTED record of a worker oomcheck never saw answer, written 30 s ago, and a
    # broker that cannot say whose its subscriptions are (a solo newcomer busy in its first task)
    record = started("n1", "celery@newcomer", 7)
    unknown = Presence(
        "celery@newcomer", None, "broker: which subscriptions are its own is unknown"
    )
    replay = Replay()
    findings = replay.step(
        replace(obs(T0, [snap(W)], started_=[record]), presence={"celery@newcomer": unknown})
    )
    # Then its task is not called orphaned while it may still run
    assert Kind.TASK_ORPHANED not in kinds(findings)
    # Nor without the broker's view at all
    assert Kind.TASK_ORPHANED not in kinds(Replay().step(obs(T0, [snap(W)], started_=[record])))
    # But once the default limit has passed, it is
    later = replay.step(
        replace(
            obs(T0 + 3600, [snap(W, at=T0 + 3600)], started_=[record]),
            presence={"celery@newcomer": unknown},
        )
    )
    assert only(later, Kind.TASK_ORPHANED).tasks[0].id == "n1"


def test_a_silent_stranger_whose_connections_are_gone_is_orphaned_at_once():
    record = started("n1", "celery@newcomer", 7)
    gone = Presence("celery@newcomer", False, "broker: no subscription on its host is open")
    findings = Replay().step(
        replace(obs(T0, [snap(W)], started_=[record]), presence={"celery@newcomer": gone})
    )
    assert only(findings, Kind.TASK_ORPHANED).tasks[0].id == "n1"


def test_a_silent_stranger_holding_its_connections_is_never_orphaned():
    record = started("n1", "celery@newcomer", 7, written=OLD)
    here = Presence("celery@newcomer", True, "broker: its named connection is open", T0)
    findings = Replay().step(
        replace(obs(T0, [snap(W)], started_=[record]), presence={"celery@newcomer": here})
    )
    assert Kind.TASK_ORPHANED not in kinds(findings)
