"""Remote control and broker presence: who answers, and for who does not, what the broker shows."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from oomcheck.detect.correlate import WorkerIdentity, workers_for_hosts
from oomcheck.model import (
    ExitEvidence,
    PidboxNames,
    Presence,
    Source,
    SourceState,
    SourceStatus,
    StartedTask,
    State,
    WorkerSnapshot,
    WorkerStatus,
)
from oomcheck.sources.inspector import InspectResult

if TYPE_CHECKING:
    from oomcheck.ports import Deps
    from oomcheck.sources.presence.owners import Member
from oomcheck.observe.base import MAX_STRANGERS, OK, Read, guard, off


def read_inspect(
    deps: Deps, state: State, now: float, *, audit: bool, suspects: Collection[str] = ()
) -> tuple[Read[InspectResult], SourceStatus, SourceStatus]:
    """Remote control: its replies define "alive" for this instant. ``inspected_at`` is local.
    The second value is broker presence's status (asked only when a known worker is silent, or
    first, of the ``suspects`` a death is suspected of); the third, the status of the broker's
    listing of its workers (the newcomers asked in this check)."""
    inspector = deps.inspector
    if inspector is None:
        return (
            Read(None, off(deps, Source.INSPECT)),
            off(deps, Source.PRESENCE),
            off(deps, Source.NEWCOMERS),
        )
    known = sorted(
        name
        for name, r in state.workers.items()
        if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
    )
    listed = _newcomers(deps, state)
    discover = (
        audit
        or not known
        or state.last_discovery_at is None
        or now - state.last_discovery_at >= deps.settings.discovery_interval_s
    )

    def needs_registered(snap: WorkerSnapshot) -> bool:
        record = state.workers.get(snap.name)
        return record is None or record.pid != snap.pid or not record.limits

    probe = _PresenceProbe(deps, state, now)
    inspected, status = guard(
        lambda: inspector.observe(
            known,
            discover=discover,
            need_registered=needs_registered,
            presence=probe if deps.presence is not None else None,
            suspects=suspects,
            newcomers=listed.newcomers,
        ),
        deps.settings.secrets(),
    )
    if inspected is None:
        return Read(None, status), probe.status, listed.status
    bindings = listed.bindings
    stale = (
        tuple(sorted((set(state.stale_bindings) | set(inspected.missing)) & bindings - set(known)))
        if bindings is not None
        else None
    )
    counters = {"new_workers_asked": len(listed.newcomers)}
    if listed.skipped:
        counters["listing_entries_skipped"] = listed.skipped
    workers = _with_shares(deps, state, now, dict(inspected.workers), inspected.missing)
    # keep what the roster knows of limits when registered() was not asked again
    for name, snap in workers.items():
        record = state.workers.get(name)
        if not snap.registered and record is not None and record.pid == snap.pid:
            workers[name] = replace(snap, registered=record.limits)
    found = replace(inspected, workers=workers, stale_bindings=stale)
    return Read(found, status, counters), probe.status, listed.status


@dataclass(frozen=True, slots=True)
class _Listed:
    """The broker's pidbox bindings (None: not read) and the newcomers among them."""

    bindings: frozenset[str] | None
    newcomers: list[str]
    status: SourceStatus
    skipped: int = 0


def _newcomers(deps: Deps, state: State) -> _Listed:
    """The broker's pidbox bindings, and the nodenames among them that the roster does not know
    and that were not asked before in vain: workers started since the last discovery, asked in
    this check instead of at the next discovery."""
    from oomcheck.sources.presence.brokers import PresenceOff

    presence = deps.presence
    if presence is None:
        return _Listed(None, [], off(deps, Source.NEWCOMERS))

    def listing() -> PidboxNames | SourceStatus:
        try:
            return presence.pidbox_names()
        except PresenceOff as exc:  # the broker cannot list them: off, with why
            return SourceStatus(SourceState.OFF, str(exc))

    found, status = guard(listing, deps.settings.secrets())
    if isinstance(found, SourceStatus):
        return _Listed(None, [], found)
    if found is None:
        return _Listed(None, [], status)
    fresh = found.names - set(state.workers) - set(state.stale_bindings)
    return _Listed(found.names, sorted(fresh)[:MAX_STRANGERS], status, found.skipped)


def _share(state: State, snap: WorkerSnapshot) -> tuple[int | None, bool]:
    """What the roster learned of this incarnation's pub/sub share, if anything."""
    record = state.workers.get(snap.name)
    if record is None or record.pid != snap.pid:
        return None, False
    return record.subscriptions, record.named_connections


def _members(
    state: State, now: float, answered: Mapping[str, WorkerSnapshot], missing: Sequence[str]
) -> list[Member]:
    from oomcheck.sources.presence.owners import Member

    members = [Member(n, now - s.uptime_s, True, *_share(state, s)) for n, s in answered.items()]
    members += [
        Member(
            n,
            state.workers[n].boot_at,
            False,
            state.workers[n].subscriptions,
            state.workers[n].named_connections,
        )
        for n in missing
        if n in state.workers
    ]
    return members


def _with_shares(
    deps: Deps,
    state: State,
    now: float,
    workers: dict[str, WorkerSnapshot],
    missing: Sequence[str],
) -> dict[str, WorkerSnapshot]:
    """The answering workers, each with its pub/sub share where it was learned this run. Asked
    of the broker only while some answering worker's share is unknown: once per incarnation."""
    presence = deps.presence
    if presence is None or all(_share(state, s)[0] is not None for s in workers.values()):
        return workers
    members = _members(state, now, workers, missing)
    # learning is best effort: a broker that fails here fails the probe or the next run
    learned = guard(lambda: presence.shares(members), deps.settings.secrets())[0] or {}
    return {
        n: replace(s, subscriptions=learned[n].count, named_connections=learned[n].named)
        if n in learned
        else s
        for n, s in workers.items()
    }


def suspects(
    state: State,
    *,
    woken: bool,
    evidence: Sequence[ExitEvidence],
    worker_map: Mapping[str, str],
) -> tuple[str, ...]:
    """The live workers of the roster a death is suspected of, whom broker presence is asked
    about first: every one after a closed subscription (which worker it was is what the check
    finds out), the ones the arriving events' ``evidence`` names after an event."""
    running = [
        n for n, r in state.workers.items() if r.status in (WorkerStatus.ALIVE, WorkerStatus.BUSY)
    ]
    if woken:
        return tuple(running)
    if not evidence:
        return ()
    identities = [WorkerIdentity(name=n) for n in running]
    hosts = {h for item in evidence for h in item.hosts}
    return tuple(workers_for_hosts(hosts, identities, worker_map))


class _PresenceProbe:
    """Asked by the inspector between the broadcast and the re-ping, with who answered and who
    did not; keeps its own status for the report."""

    def __init__(self, deps: Deps, state: State, now: float) -> None:
        self.deps = deps
        self.state = state
        self.now = now
        self.status = OK if deps.presence is not None else off(deps, Source.PRESENCE)

    def __call__(
        self, answered: Mapping[str, WorkerSnapshot], missing: Sequence[str]
    ) -> Mapping[str, Presence]:
        from oomcheck.sources.presence.brokers import PresenceOff

        presence = self.deps.presence
        assert presence is not None
        members = _members(self.state, self.now, answered, missing)

        def judge() -> Mapping[str, Presence] | SourceStatus:
            try:
                return presence.judge(members)
            except PresenceOff as exc:  # denied by an ACL: off, as if not configured
                return SourceStatus(SourceState.OFF, str(exc))

        found, self.status = guard(judge, self.deps.settings.secrets())
        if isinstance(found, SourceStatus):
            self.status = found
            return {}
        return found or {}


def reping_strangers(
    deps: Deps,
    state: State,
    workers: Mapping[str, WorkerSnapshot],
    started: tuple[StartedTask, ...],
) -> tuple[dict[str, WorkerSnapshot], dict[str, Presence]]:
    """Workers named by STARTED records that neither answered nor are on the roster (newcomers
    since the last discovery, or workers that died unseen), pinged by name once before their
    tasks count as orphans (they may have missed a limited broadcast). Those that stay silent
    are shown to broker presence: a newcomer busy in a solo task still holds its connections,
    and its task is not an orphan."""
    inspector = deps.inspector
    if inspector is None:
        return {}, {}
    strangers = sorted({t.worker for t in started if t.worker} - set(workers) - set(state.workers))[
        :MAX_STRANGERS
    ]
    if not strangers:
        return {}, {}
    # same broker as inspect, which answered: not a source status of its own
    found = dict(guard(lambda: inspector.ping_direct(strangers), deps.settings.secrets())[0] or {})
    silent = [n for n in strangers if n not in found]
    presence = deps.presence
    if not silent or presence is None:
        return found, {}
    from oomcheck.sources.presence.owners import Member

    members = [Member(n, None, False) for n in silent]  # never seen: their start is unknown
    seen = guard(lambda: presence.judge(members), deps.settings.secrets())[0] or {}
    return found, dict(seen)
