"""Properties of evaluate(): findings do not depend on what workers are called or in which order
they answer (the first bug of issue 8 depended on both)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from oomcheck.model import Finding
from tests.unit.scenario import LIMITS, T0, Replay, obs, snap, started, task

NAMES = [f"celery@w{i}" for i in range(8)]


@dataclass(frozen=True)
class Step:
    alive: frozenset[int]  # worker indexes that answer
    restarted: frozenset[int]  # of those, the ones that came back as a new process


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Step]]:
    size = draw(st.integers(min_value=2, max_value=5))
    indexes = list(range(size + 2))  # two more may join later
    steps = [
        Step(frozenset(range(size)), frozenset()),
        *(
            Step(
                frozenset(draw(st.sets(st.sampled_from(indexes)))),
                frozenset(draw(st.sets(st.sampled_from(indexes), max_size=1))),
            )
            for _ in range(draw(st.integers(min_value=1, max_value=4)))
        ),
    ]
    return size, steps


def _replay(steps: list[Step], names: list[str], reverse: bool) -> list[list[tuple]]:
    replay = Replay()
    boots = dict.fromkeys(range(len(names)), T0 - 1000)
    pids = {i: 100 + 10 * i for i in range(len(names))}
    out = []
    for n, step in enumerate(steps):
        at = T0 + 60 * n
        for i in step.restarted & step.alive:
            if n:
                boots[i], pids[i] = at - 5, pids[i] + 1000
        answering = []
        work = []
        for i in sorted(step.alive, reverse=reverse):
            tid = f"t{i}"
            pid = pids[i] + 1
            answering.append(
                snap(
                    names[i],
                    pids[i],
                    boot=boots[i],
                    at=at,
                    pool_pids=[pid],
                    limits=LIMITS,
                    active=[task(tid, pid, start=boots[i] + 1)],
                )
            )
        for i in range(len(names)):
            work.append(started(f"t{i}", names[i], pids[i] + 1, written=boots[i] + 1))
        if reverse:
            work.reverse()
        findings = replay.step(obs(at, answering, started_=work))
        out.append(_normal(findings, names))
    out.append(sorted((k, a) for _, k, a in replay.sent))
    return out


def _normal(findings: list[Finding], names: list[str]) -> list[tuple]:
    index = {name: i for i, name in enumerate(names)}
    return sorted(
        (
            f.kind.value,
            f.severity.value,
            index.get(f.worker or "", -1),
            f.cause.value,
            tuple(sorted((t.id, t.verdict.value) for t in f.tasks)),
        )
        for f in findings
    )


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.permutations(NAMES))
def test_renaming_or_reordering_workers_never_changes_the_findings(scenario, renamed):
    size, steps = scenario
    names = NAMES[: size + 2]
    baseline = _replay(steps, names, reverse=False)
    assert _replay(steps, renamed[: size + 2], reverse=False) == baseline
    assert _replay(steps, names, reverse=True) == baseline
