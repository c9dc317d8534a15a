"""The observe step's small types: a source's typed outcome, the guard that turns an exception
into a status (scrubbing secrets once), the reference clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from oomcheck.model import LostFailure, Source, SourceState, SourceStatus, StartedTask
from oomcheck.redact import scrub

if TYPE_CHECKING:
    from oomcheck.ports import Deps, ReferenceClock

T = TypeVar("T")
OK = SourceStatus(SourceState.OK)
# strangers pinged by name per run: a flood of unknown names must not stall the run
MAX_STRANGERS = 50
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """One source's outcome: ``value`` is None when it failed or is off."""

    value: T | None
    status: SourceStatus
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClockRead:
    at: float  # the observation's time: the reference clock's, else the local one
    offset_s: float | None  # reference minus local; None when no reference answered
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ResultsRead:
    started: tuple[StartedTask, ...]
    lost: tuple[LostFailure, ...]
    cursor: str | None
    # result-backend status of tasks that were active on workers that have since vanished
    task_status: Mapping[str, str]


def guard(call: Callable[[], T], secrets: tuple[str, ...]) -> tuple[T | None, SourceStatus]:
    """``call()``'s value and ``ok``, or None and an ``error`` status with scrubbed text."""
    try:
        return call(), OK
    except Exception as exc:  # noqa: BLE001 - a source must never take the run down
        return None, error(f"{type(exc).__name__}: {exc}", secrets)


def error(text: str, secrets: tuple[str, ...]) -> SourceStatus:
    return SourceStatus(SourceState.ERROR, scrub(text, secrets)[:MAX_ERROR_CHARS])


def read_clock(reference: ReferenceClock, local: Callable[[], float]) -> ClockRead:
    """One ``TIME`` against the local clock; the local clock, said so, when it cannot be read."""
    before = local()
    try:
        server = reference()
    except Exception:  # noqa: BLE001 - the source itself will report why, in its own status
        return ClockRead(
            before,
            None,
            f"reference clock ({reference.name} TIME) did not answer: times in this run are the "
            "checker's own clock",
        )
    after = local()
    # half the round trip each way: the server read its clock about mid-way
    return ClockRead(server, server - (before + after) / 2)


def off(deps: Deps, source: Source) -> SourceStatus:
    return SourceStatus(SourceState.OFF, deps.off.get(source.value, "not configured"))
