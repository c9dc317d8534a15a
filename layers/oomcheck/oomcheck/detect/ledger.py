"""The incident ledger: the only code that opens, updates, reminds, expires and resolves incidents.

It turns the families' outcomes into incident transitions (healthchecks' ``Flip``), in this order:
 1. a signal opens an incident or refreshes the open one with the same key (queueing an ``update``
    when the cause, the exit code or the victim tasks became known);
 2. a resolution closes one, with the family's reason, unless a signal refreshed it this run;
 3. a family that judged resolves, in its own words (``Outcome.gone``), every open incident of its
    kinds that nobody mentioned and that it did not hold; the incidents of a family whose inputs
    failed (``judged`` False), and those it held, stay open as they were;
 4. an incident open past the expiry closes; one held and due reminds.
Unchanged incidents stay the same objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from oomcheck.detect import text
from oomcheck.detect.context import Context
from oomcheck.detect.signals import Outcome, Signal
from oomcheck.model import Action, Finding, Incident, IncidentKey, Kind, PendingAlert, Severity

# Kinds whose incident closes as soon as its alert is out: the event is over when we see it.
EVENT_KINDS = frozenset({Kind.WORKER_RESTARTED, Kind.CHILD_KILLED, Kind.OOM_KILL})


def incident_id_for(key: IncidentKey, taken: Mapping[str, Incident], now: float) -> str:
    """Stable for the first occurrence of a key (so a report of a run that could not read the
    state names the id the stored incident has); later occurrences add the time."""
    first = "inc-" + hashlib.sha256(str(key).encode()).hexdigest()[:12]
    if first not in taken:
        return first
    return "inc-" + hashlib.sha256(f"{key}@{now:.0f}".encode()).hexdigest()[:12]


@dataclass
class _Book:
    now: float
    incidents: dict[str, Incident]
    open_by_key: dict[IncidentKey, Incident]
    findings: list[Finding] = field(default_factory=list)
    touched: set[IncidentKey] = field(default_factory=set)

    def put(self, incident: Incident) -> None:
        self.incidents[incident.id] = incident
        if incident.is_open:
            self.open_by_key[incident.key] = incident
        else:
            self.open_by_key.pop(incident.key, None)
        self.touched.add(incident.key)


def settle(ctx: Context, outcomes: Iterable[Outcome]) -> tuple[dict[str, Incident], list[Finding]]:
    book = _Book(ctx.now, dict(ctx.state.incidents), dict(ctx.open_by_key))
    outcomes = tuple(outcomes)
    for outcome in outcomes:
        for signal in outcome.signals:
            _signal(book, signal)
    for outcome in outcomes:
        for resolution in outcome.resolutions:
            incident = book.open_by_key.get(resolution.key)
            if incident is not None and resolution.key not in book.touched:
                _resolve(book, incident, resolution.why, resolution.finding)
    said = {signal.key for outcome in outcomes for signal in outcome.signals}
    for outcome in outcomes:
        _sweep(book, outcome, said)
    for incident in list(book.open_by_key.values()):
        if ctx.now - incident.opened_at >= ctx.policy.incident_expiry_s:
            _resolve(
                book,
                incident,
                f"still open after {ctx.policy.incident_expiry_s / 3600:.0f} h; closed to stop "
                "reminders (run an audit to see the current state)",
            )
            continue
        if incident.key not in book.touched:
            book.findings.append(incident.finding)  # held: its family could not judge it this run
        _remind_if_due(book, incident, ctx.policy.remind_after_s)
    return book.incidents, _ordered(book.findings)


def _sweep(book: _Book, outcome: Outcome, said: set[IncidentKey]) -> None:
    """Step 3: what a family owns, judged and did not mention (not even in a finding that is only
    reported) is over; a family that forgets to say so cannot leave an incident reminding until
    it expires."""
    if not outcome.judged:
        return
    for incident in list(book.open_by_key.values()):
        key = incident.key
        unmentioned = key not in book.touched and key not in said and key not in outcome.held
        if unmentioned and incident.kind in outcome.kinds:
            _resolve(book, incident, outcome.gone(incident.key))


def _signal(book: _Book, signal: Signal) -> None:
    finding = signal.finding
    if not finding.alertable:
        book.findings.append(finding)
        return
    existing = book.open_by_key.get(signal.key)
    if existing is None:
        _open(book, signal)
        return
    finding = replace(finding, first_seen=existing.opened_at, incident_id=existing.id)
    change = material_change(existing.finding, finding)
    if signal.news and finding != existing.finding:
        change = "; ".join(part for part in (change, signal.news) if part)
    pending = existing.pending
    if change and not any(p.action == Action.OPEN for p in pending):
        pending = (
            *(p for p in pending if p.action != Action.UPDATE),
            PendingAlert(
                Action.UPDATE, book.now, note=_merged_note(pending, change), seq=_seq(existing)
            ),
        )
    updated = replace(existing, finding=finding, pending=pending)
    book.put(existing if updated == existing else updated)
    book.findings.append(finding)


def _open(book: _Book, signal: Signal) -> None:
    incident_id = incident_id_for(signal.key, book.incidents, book.now)
    finding = replace(signal.finding, first_seen=book.now, incident_id=incident_id)
    event = finding.kind in EVENT_KINDS
    book.put(
        Incident(
            id=incident_id,
            key=signal.key,
            kind=finding.kind,
            opened_at=book.now,
            finding=finding,
            closed_at=book.now if event else None,
            resolution="event: alerted once, nothing to recover" if event else None,
            pending=(PendingAlert(Action.OPEN, book.now),),
            fleet_size=signal.fleet_size,
        )
    )
    book.findings.append(finding)


def _resolve(book: _Book, incident: Incident, why: str, finding: Finding | None = None) -> None:
    finding = finding or incident.finding
    needs_notice = incident.alerts_sent > 0 or any(
        p.action == Action.OPEN for p in incident.pending
    )
    kept = tuple(p for p in incident.pending if p.action == Action.OPEN)
    notice = (
        (PendingAlert(Action.RESOLVE, book.now, seq=_seq(incident, len(kept))),)
        if needs_notice
        else ()
    )
    book.put(
        replace(
            incident,
            finding=finding,
            closed_at=book.now,
            resolution=why,
            pending=(*kept, *notice),
        )
    )
    book.findings.append(
        Finding(
            kind=Kind.WORKER_RECOVERED,
            severity=Severity.INFO,
            worker=finding.worker,
            cause=finding.cause,
            exit_code=finding.exit_code,
            evidence=(why,),
            tasks=finding.tasks,
            first_seen=incident.opened_at,
            incident_id=incident.id,
            summary=f"resolved {incident.kind.value}: {why}",
            key=incident.key,
        )
    )


def _remind_if_due(book: _Book, incident: Incident, remind_after_s: float) -> None:
    current = book.incidents[incident.id]
    due = (
        current.is_open
        and current.last_alert_at is not None
        and not current.pending
        and book.now - current.last_alert_at >= remind_after_s
    )
    if due:
        book.put(
            replace(current, pending=(PendingAlert(Action.REMIND, book.now, seq=_seq(current)),))
        )


def material_change(before: Finding, after: Finding) -> str | None:
    """What on-call should be told again, in words: a cause or exit code that became known or
    changed, or tasks that turned out to have died with it. None when nothing material changed."""
    parts: list[str] = []
    if (after.cause, after.exit_code) != (before.cause, before.exit_code) and (
        after.cause.value != "unknown" or after.exit_code is not None
    ):
        parts.append("now known: " + text.cause_words(after.cause, after.exit_code))
    new_tasks = {t.id for t in after.tasks} - {t.id for t in before.tasks}
    if new_tasks:
        parts.append(f"{len(new_tasks)} more task(s) died with it")
    return "; ".join(parts) or None


def _merged_note(pending: tuple[PendingAlert, ...], change: str) -> str:
    earlier = [p.note for p in pending if p.action == Action.UPDATE and p.note]
    return "; ".join(dict.fromkeys((*earlier, change)))


def _seq(incident: Incident, offset: int | None = None) -> int:
    """The number of the incident's next message: with the id and action, its dedup key."""
    return incident.alerts_sent + (len(incident.pending) if offset is None else offset)


def _ordered(findings: list[Finding]) -> list[Finding]:
    order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(
        findings,
        key=lambda f: (order[f.severity], f.kind.value, f.worker or "", str(f.key or "")),
    )


__all__ = ["EVENT_KINDS", "incident_id_for", "material_change", "settle"]
