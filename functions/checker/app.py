"""The oomcheck Lambda: a thin handler around oomcheck.runner.

Scheduled events run a check (or a watch, when the schedule's input asks for one); a manual
``{"mode": "audit"}`` returns the full read-only report. ECS task-stopped events (an SQS batch,
or one EventBridge event) and CloudWatch Logs subscription payloads run a check with their
evidence in hand; an SQS batch gets a partial batch response. Adapters are built once per container,
on the first invocation (not at import: settings may need SSM, and tests import this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from oomcheck.deadline import Deadline
from oomcheck.entry.invocation import parse_invocation
from oomcheck.entry.lambdalog import bind_run, route_library_logs
from oomcheck.entry.snapshot import INIT_CONTEXT, install_snapshot_hooks
from oomcheck.model import Delivery, Mode, Source, SourceState
from oomcheck.ports import Deps
from oomcheck.report.document import Report, source_text
from oomcheck.report.metrics import CATALOG, blobs, open_incidents_text, run_level
from oomcheck.runner import combine, run_once, watch

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

    from oomcheck.entry.arrivals import Arrival

logger = Logger()
metrics = Metrics()

_deps: Deps | None = None
# Time kept back from a watch so the last check finishes before the Lambda timeout.
_WATCH_MARGIN_S = 8.0
# Time kept back from every run for the metrics, the log line and the return.
_HANDLER_MARGIN_S = 1.0


def _get_deps(context: LambdaContext) -> Deps:
    global _deps  # noqa: PLW0603 - one set of clients per container, reused across invocations
    if _deps is None:
        from oomcheck.config.settings import from_env
        from oomcheck.wiring import build_deps

        # The first invocation's remaining time is the function's timeout: the clients' timeouts
        # and retries are sized from it.
        _deps = build_deps(
            from_env(),
            write=lambda text: logger.warning("alert (no topic)", extra={"alert": text}),
            budget_s=context.get_remaining_time_in_millis() / 1000.0,
        )
    return _deps


# SnapStart (when on): the clients built before the snapshot; made this copy's own after a restore.
install_snapshot_hooks(lambda: _get_deps(INIT_CONTEXT), lambda: _deps)


def _emit(report: Report, target: str, tasks: frozenset[str]) -> None:
    """The run-level metrics on the handler's Metrics (``service`` dimension, flushed by
    log_metrics), then one EMF document per set of per-target dimension values."""
    for name, value in run_level(report).items():
        metrics.add_metric(name=name, unit=MetricUnit(CATALOG[name].unit), value=value)
    for blob in blobs(report, target, tasks):
        # service="": exactly the catalog's dimensions, without Powertools' default one
        doc = EphemeralMetrics(namespace=metrics.namespace, service="")
        for dimension, text in blob.dimensions.items():
            doc.add_dimension(name=dimension, value=text)
        for point in blob.points:
            doc.add_metric(name=point.name, unit=MetricUnit(point.unit), value=point.value)
        for key, meta in blob.metadata.items():
            doc.add_metadata(key=key, value=meta)
        doc.flush_metrics()


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = _get_deps(context)
    invocation = parse_invocation(event, containers=deps.settings.containers)
    route_library_logs(logger, deps.settings.secrets())
    remaining = context.get_remaining_time_in_millis() / 1000.0
    deadline = Deadline.after(remaining - _HANDLER_MARGIN_S, deps.monotonic)
    bind_run(
        logger,
        target=deps.settings.target,
        mode=invocation.mode.value,
        owner=deps.owner,
        scheduled_time=invocation.scheduled_time,
    )
    if invocation.silence is not None:
        return _silence(deps, invocation.silence)
    if invocation.arrival is not None:
        _log_arrival(invocation.arrival)
    if invocation.mode is Mode.DIGEST:
        return _digest(deps)
    if invocation.mode is Mode.WATCH:
        duration = max(0.0, min(invocation.duration_s, remaining - _WATCH_MARGIN_S))
        reports = watch(
            deps,
            interval=invocation.interval_s or deps.settings.watch_interval_s,
            duration=duration,
            deadline=deadline,
        )
        report = combine(reports)
    else:
        since: dict[str, Any] = (
            {"since_s": invocation.since_s} if invocation.since_s is not None else {}
        )
        report = run_once(deps, invocation.mode, deadline, arrival=invocation.arrival, **since)
    _emit(report, deps.settings.target, deps.settings.metric_tasks)
    body = report.to_json()
    logger.info(
        "run finished",
        extra={
            "findings": [f"{f.kind.value}:{f.worker}" for f in report.findings if f.alertable],
            "sources": body["sources"],
            "stats": body["stats"],
            "alerts": body["alerts"],
            # for the dashboard's "open incidents now" (a Logs Insights table of this line)
            "open_incidents": open_incidents_text(report),
        },
    )
    for alert in report.alerts:
        if alert.outcome is Delivery.UNDELIVERABLE:
            # dropped from the outbox: the alarm on AlertsUndeliverable and this line say so
            logger.error(
                "alert undeliverable",
                extra={
                    "incident_id": alert.incident_id,
                    "action": alert.action.value,
                    "error": alert.error,
                },
            )
    if invocation.batch is not None:
        return dict(_batch_response(report, invocation.batch))
    return body


def _silence(deps: Deps, request: Mapping[str, Any]) -> dict[str, Any]:
    """A silence added, listed or expired for a team without CLI access; a refused request is
    ``{"error": "..."}``, one line."""
    from oomcheck.silences.commands import from_payload
    from oomcheck.silences.model import SilenceError
    from oomcheck.store.base import StateError

    if deps.silences is None:
        return {"error": "no place for silences is configured"}
    try:
        state = deps.store.load()
    except StateError:
        state = None  # only the "matches nothing" note needs it
    try:
        out = from_payload(request, deps.silences, state, deps.clock())
    except (SilenceError, StateError) as exc:
        logger.warning("silence refused", extra={"error": str(exc)})
        return {"error": str(exc)}
    logger.info("silence", extra={"action": request.get("action", "list"), "result": out})
    return out


def _digest(deps: Deps) -> dict[str, Any]:
    """The weekly digest (its own schedule): one message from the stored history, no check."""
    from oomcheck import aws
    from oomcheck.alerting.digest import send_digest

    sns = aws.client("sns") if deps.settings.topic_arn else None
    sent = send_digest(deps, lambda text: logger.info("digest", extra={"text": text}), sns=sns)
    logger.info("digest sent" if sent.published else "digest not sent", extra=sent.to_json())
    return sent.to_json()


def _log_arrival(arrival: Arrival) -> None:
    logger.append_keys(arrival=arrival.shape.value)
    for line in arrival.dropped:
        logger.warning("event dropped", extra={"reason": line})


def _batch_response(report: Report, items: tuple[str, ...]) -> PartialItemFailureResponse:
    """Every record back to the queue when the run could not act on its evidence: the lease was
    busy (another run holds the state) or the state could not be read or saved. SQS redelivers
    them after the visibility timeout; the dead-letter queue takes what keeps failing, and
    scheduled runs read the same events from the log group meanwhile. Dropped records are not
    handed back: they would fail again."""
    state = report.sources.get(Source.STATE)
    if state is None or state.state not in (SourceState.BUSY, SourceState.ERROR):
        return {"batchItemFailures": []}
    logger.warning(
        "batch handed back to the queue",
        extra={"state": source_text(state), "records": len(items)},
    )
    return {"batchItemFailures": [{"itemIdentifier": item} for item in items]}
