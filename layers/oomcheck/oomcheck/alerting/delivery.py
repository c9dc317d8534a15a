"""Delivery of the outbox: publish each message, then save its sent mark at once.

Rules, in the order they matter:
1. A message goes out only while the deadline leaves time for it (its worst case) and for the
   rest of the run (save, release): a run never starts a publish it cannot finish.
2. Each accepted message's sent marks are saved right away (fenced by the lease), so a run cut
   short later repeats nothing it already sent. If that save fails, the marks are kept in this
   process (``SentJournal``) and applied to the state the next run loads: a warm Lambda
   container or a watch does not send them again.
3. A failure that may pass (throttling, 5xx, a timeout) leaves the alert pending and stops
   publishing for this run: the next run retries, in order. A failure that can never pass (SNS
   refused the message itself) is retried once in the reduced form, then dropped as
   undeliverable, with the reason in the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from oomcheck.alerting import channels, outbox, taskevents
from oomcheck.alerting import render as alerting
from oomcheck.alerting.outbox import SentJournal, SentMark
from oomcheck.alerting.runbooks import Runbooks
from oomcheck.deadline import Deadline
from oomcheck.model import Delivery, SourceState, SourceStatus, State
from oomcheck.ports import Publisher, StateStore, TaskEventSink
from oomcheck.redact import scrub
from oomcheck.report.document import AlertRecord
from oomcheck.store.base import LeaseLost, StateError


@dataclass(frozen=True, slots=True)
class Outbox:
    """What delivery talks to, and the time it may take."""

    publisher: Publisher
    store: StateStore
    owner: str
    retention_s: float
    deadline: Deadline
    publish_s: float  # worst case of one publish, retries included
    # Time kept back for the rest of the run: the last sent mark's save (the release is skipped
    # when no time is left for it: the lease then expires seconds after the deadline).
    finish_s: float
    journal: SentJournal
    secrets: tuple[str, ...] = ()
    sleep: Callable[[float], None] = time.sleep
    # only a printer takes alerts: what it took was printed, not published
    printed_only: bool = False
    runbooks: Runbooks = field(default_factory=Runbooks)
    # incident id -> the silence holding its messages: they stay pending, unsent
    held: Mapping[str, str] = field(default_factory=dict)
    task_events: TaskEventSink | None = None
    group_wait_s: float = 0.0


@dataclass
class Delivered:
    state: State  # with every mark of this run
    saved: State  # what the store holds
    records: list[AlertRecord] = field(default_factory=list)
    messages: int = 0
    undeliverable: int = 0
    writes: int = 0
    # why publishing stopped early (a failure that may pass, the deadline), if it did: the
    # alerts after it are deferred for that reason
    stopped: str | None = None
    state_error: str | None = None
    task_events: taskevents.Sent | None = None


def deliver(box: Outbox, state: State, saved: State, now: float) -> Delivered:
    """Publish every pending alert in order (an open before the resolve queued behind it)."""
    done = Delivered(state=state, saved=saved)
    for _ in range(3):  # an open, then an update or resolve queued behind it in the same run
        todo = outbox.batches(done.state, box.held, box.group_wait_s, now)
        if not todo:
            break
        sent_before = done.messages + done.undeliverable
        for batch in todo:
            if done.stopped is None and not box.deadline.allows(box.publish_s + box.finish_s):
                done.stopped = "the run's deadline is near"
            if done.stopped is not None:
                _record(done, batch, "", Delivery.DEFERRED, done.stopped)
                continue
            _send(box, batch, now, done)
        if done.stopped is not None or done.messages + done.undeliverable == sent_before:
            break
    _save(box, done)
    return done


def _publish(box: Outbox, message: alerting.AlertMessage) -> alerting.PublishError | None:
    try:
        box.publisher.publish(message)
    except alerting.PublishError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any failure of a publisher leaves the alert pending
        return alerting.PublishError(f"{type(exc).__name__}: {exc}")
    return None


def _earlier(batch: outbox.Batch) -> frozenset[str]:
    """Channels that took every member's alert in an earlier run."""
    sets = [frozenset(pending.taken) for _, pending in batch.members]
    return frozenset.intersection(*sets) if sets else frozenset()


def _send(box: Outbox, batch: outbox.Batch, now: float, done: Delivered) -> None:
    earlier = _earlier(batch)
    message = replace(alerting.fit(batch, now, box.runbooks), taken=earlier)
    error = _publish(box, message)
    if error is not None and error.permanent:
        if box.deadline.allows(box.publish_s + box.finish_s):
            message = replace(alerting.reduced(batch, now, box.runbooks), taken=error.taken)
            error = _publish(box, message)
        else:  # not dropped untried: the next run retries it in the reduced form
            error = alerting.PublishError(str(error), taken=error.taken)
    names = channels.channel_names(box.publisher)
    channel_outcomes = channels.outcomes(names, earlier, error)
    if error is None:
        for incident, pending in batch.members:
            done.state = outbox.mark_sent(done.state, incident.id, pending.action, now)
            box.journal.marks.append(
                SentMark(incident.id, pending.action, outbox.dedup_key(incident, pending), now)
            )
        done.messages += 1
        taken = Delivery.PRINTED if box.printed_only else Delivery.PUBLISHED
        _record(done, batch, message.subject, taken, None, by_channel=channel_outcomes)
        _save(box, done)
        return
    reason = scrub(str(error), box.secrets)[:300]
    if error.permanent:
        for incident, pending in batch.members:
            done.state = outbox.mark_undeliverable(done.state, incident.id, pending.action)
        done.undeliverable += 1
        _record(
            done,
            batch,
            message.subject,
            Delivery.UNDELIVERABLE,
            reason,
            by_channel=channel_outcomes,
        )
        _save(box, done)
        return
    took = error.taken & frozenset(names)
    for incident, pending in batch.members:
        done.state = outbox.mark_failed(done.state, incident.id, pending.action, reason, took)
    _record(done, batch, message.subject, Delivery.FAILED, reason, by_channel=channel_outcomes)
    if took - earlier:
        # what a channel took is saved now: a run cut short after this repeats it nowhere
        _save(box, done)
    done.stopped = reason


def _record(
    done: Delivered,
    batch: outbox.Batch,
    subject: str,
    outcome: Delivery,
    reason: str | None,
    *,
    by_channel: dict[str, str] | None = None,
) -> None:
    subject = subject or alerting.batch_subject(batch)
    for incident, pending in batch.members:
        done.records.append(
            AlertRecord(
                incident.id,
                incident.kind,
                pending.action,
                subject,
                outcome,
                reason,
                channels=dict(by_channel or {}),
            )
        )


def _save(box: Outbox, done: Delivered) -> None:
    """Save what changed since the last save. A lost lease propagates (nothing more may be
    written or sent); another failure stops publishing, and the journal keeps the marks."""
    if done.state is done.saved or done.state_error is not None:
        return
    try:
        stats = box.store.save(box.owner, done.saved, done.state, box.retention_s)
    except LeaseLost:
        raise
    except StateError as exc:
        done.state_error = scrub(str(exc), box.secrets)[:300]
        if done.stopped is None:
            done.stopped = "sent marks could not be saved"
        return
    done.writes += stats.writes
    done.saved = done.state
    box.journal.marks.clear()


@dataclass
class Committed:
    """The write half of a run: what was saved and sent, and how the state store fared."""

    delivered: Delivered
    status: SourceStatus = field(default_factory=lambda: SourceStatus(SourceState.OK))
    released: bool = False


def commit(box: Outbox, loaded: State, new_state: State, now: float) -> Committed:
    """1. save what the evaluation changed (the outbox included), 2. deliver, saving each sent
    mark, 3. release the lease with the state as saved. Raises nothing but what the caller must
    see: a lost lease or a store failure becomes the status."""
    done = Delivered(state=new_state, saved=loaded)
    out = Committed(done)
    try:
        _save(box, done)
        if done.state_error is not None:
            out.status = SourceStatus(SourceState.ERROR, done.state_error)
            return out
        if box.deadline.allows(box.finish_s):
            out.delivered = done = _continue(box, done, now)
        if box.task_events is not None and done.state_error is None:
            _send_task_events(box, box.task_events, done)
        if done.state_error is not None:
            out.status = SourceStatus(SourceState.ERROR, done.state_error)
            return out
        if box.deadline.allows(box.finish_s):
            box.store.release(box.owner, done.saved)
            done.writes += 1
            out.released = True
        # else the lease, a few seconds longer than the deadline, expires by itself
    except LeaseLost as exc:
        out.status = SourceStatus(
            SourceState.LOST, f"{exc}; alerts sent by this run may be sent again"
        )
    except StateError as exc:
        out.status = SourceStatus(SourceState.ERROR, scrub(str(exc), box.secrets)[:300])
    return out


def _send_task_events(box: Outbox, sink: TaskEventSink, done: Delivered) -> None:
    """After the alerts: an event per task verdict not sent yet, marked on its incident and
    saved at once (what the deadline leaves out goes next run, with the same keys)."""
    todo = taskevents.due(done.state)
    if not todo:
        return
    sent = sink.send(todo, lambda: box.deadline.allows(box.publish_s + box.finish_s))
    done.task_events = sent
    done.state = taskevents.mark(done.state, todo, sent.events)
    _save(box, done)


def _continue(box: Outbox, done: Delivered, now: float) -> Delivered:
    more = deliver(box, done.state, done.saved, now)
    more.writes += done.writes
    return more
