"""Metrics and history on a fleet (issue 21): the fleet benchmark's fake remote control and
DynamoDB on moto, each check followed by the handler's metric documents (serialised as the
Lambda prints them), the history by task type kept in the state.

Figures, each beside a reference measured in the same run:
  - DynamoDB item writes of a run with nothing changed (target 0), beside the run that saved
    ten deaths (their incidents, roster records and history items);
  - the healthy check's time with metrics and history, beside the same check with history
    replaced by a pass-through and no metrics;
  - the metrics' monthly cost at the default schedule, from the documents the runs emitted:
    the metrics sent every run cost a month each; event counts only in the hours they happen.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from typing import Any

from bench.bench_cost import METRIC_MONTH, RUNS_PER_MONTH
from bench.bench_fleet import (
    FakeApp,
    FakeClock,
    FleetBroker,
    FleetControl,
    FleetResults,
    moto_without_table_backup,
)
from bench.common import CountingPublisher, DynamoMeter, Result, median, ms, progress

# fake seconds between checks: watch mode's cadence. The fake fleet's tasks never finish, so
# minutes of fake time would make them stalled (task_stalled incidents), which is not what this
# benchmark measures (bench_fleet keeps to five runs a minute apart for the same reason)
STEP_S = 10.0
LOGS_INGEST_GB = 0.50
HOURS_PER_MONTH = 730
# a dashboard beyond the account's three free ones
DASHBOARD_MONTH = 3.00
# deaths a month assumed for the event metrics' share (each in an hour of its own, its incident
# open for an hour): shown, not measured
DEATHS_PER_MONTH = 30


def _emit(report: Any, target: str) -> tuple[int, set[tuple[str, tuple[tuple[str, str], ...]]]]:
    """The per-target EMF documents the handler prints for ``report``: their bytes and the
    distinct metrics (name and dimension values) in them."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    from oomcheck.report.metrics import blobs

    out = io.StringIO()
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    with contextlib.redirect_stdout(out):
        for blob in blobs(report, target):
            doc = EphemeralMetrics(namespace="oomcheck", service="")
            for key, value in blob.dimensions.items():
                doc.add_dimension(name=key, value=value)
            for point in blob.points:
                doc.add_metric(name=point.name, unit=MetricUnit(point.unit), value=point.value)
                seen.add((point.name, tuple(sorted(blob.dimensions.items()))))
            for key, meta in blob.metadata.items():
                doc.add_metadata(key=key, value=meta)
            doc.flush_metrics()
    return len(out.getvalue().encode()), seen


@contextlib.contextmanager
def _history_off() -> Iterator[None]:
    """The reference: history carried through unchanged (as before issue 21)."""
    from oomcheck.detect import history

    real = history.recorded
    history.recorded = lambda before, incidents, policy, now: before.task_history  # type: ignore[assignment]
    try:
        yield
    finally:
        history.recorded = real  # type: ignore[assignment]


def _measure(size: int, repeats: int) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from oomcheck.config.settings import Settings
    from oomcheck.ports import Deps
    from oomcheck.runner import run_once
    from oomcheck.sources.inspector import CeleryInspector
    from oomcheck.store.dynamodb import DynamoDBStateStore, table_definition

    clock = FakeClock(1_790_000_000.0)
    fleet = FleetControl(size, clock)
    with mock_aws(), moto_without_table_backup():
        dynamo = boto3.client("dynamodb", region_name="us-east-1")
        dynamo.create_table(**table_definition("oomcheck-bench"))
        meter = DynamoMeter(dynamo)
        settings = Settings(broker_url="redis://127.0.0.1:1/0", result_backend="redis://x/1")
        deps = Deps(
            settings=settings,
            store=DynamoDBStateStore("oomcheck-bench", "bench", client=dynamo),
            publisher=CountingPublisher(),
            inspector=CeleryInspector("memory://", app=FakeApp(fleet), clock=clock),
            results=FleetResults(fleet),
            broker=FleetBroker(fleet),
            clock=clock,
        )
        deps.off["exits"] = "not part of this benchmark"

        def check(*, metrics: bool = True) -> dict[str, Any]:
            clock.now += STEP_S
            mark = meter.mark()
            t0 = time.perf_counter()
            report = run_once(deps, "check")
            emitted, seen = _emit(report, "bench") if metrics else (0, set())
            took = time.perf_counter() - t0
            dyn = meter.since(mark)
            return {"s": took, "bytes": emitted, "metrics": seen, "writes": dyn}

        check()  # first run: every worker new
        # paired, alternating: the machine's other load falls on both alike
        steady: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for _ in range(repeats):
            steady.append(check())
            with _history_off():
                bare.append(check(metrics=False))
        doomed = [w.name for w in fleet.workers.values() if w.tasks][-10:]
        fleet.alive.difference_update(doomed)
        died = check()
        after = [check() for _ in range(repeats)]
        state = deps.store.load()
    return {
        "size": size,
        "steady": steady,
        "bare": bare,
        "died": died,
        "after": after,
        "history_items": len(state.task_history),
    }


def _monthly(m: dict[str, Any]) -> dict[str, float]:
    from oomcheck.report.metrics import ALWAYS

    always = len(ALWAYS) + 1  # ColdStart
    death_metrics = {name for name, _ in m["died"]["metrics"]} - {"OpenIncidents"}
    event_hours = DEATHS_PER_MONTH * len(death_metrics)
    emf_bytes = median([r["bytes"] for r in m["steady"]])
    return {
        "always": always,
        "fixed": always * METRIC_MONTH,
        "events": event_hours / HOURS_PER_MONTH * METRIC_MONTH,
        "event_metrics": len(death_metrics),
        "logs": RUNS_PER_MONTH * emf_bytes / 2**30 * LOGS_INGEST_GB,
        "emf_bytes": emf_bytes,
    }


def run(quick: bool = False) -> Result:
    result = Result("metrics", tag="$")
    size = 1000 if quick else 5000
    repeats = 3 if quick else 10
    progress(f"metrics: {size:,} workers (fake control, DynamoDB on moto), metrics + history on")
    m = _measure(size, repeats)
    result.facts["metrics"] = m
    n = f"{size:,} workers"
    steady_writes = max(r["writes"]["item_writes"] for r in (*m["steady"], *m["after"]))
    died = m["died"]["writes"]
    result.add(
        f"{n}, metrics + history on: DynamoDB item writes per steady run (max of "
        f"{len(m['steady']) + len(m['after'])})",
        f"{steady_writes} item writes",
        f"the run that saved 10 deaths: {died['item_writes']} item writes "
        f"(incidents, roster, {m['history_items']} history item(s) by task type)",
        "0",
        steady_writes == 0,
    )
    with_s = median([r["s"] for r in m["steady"]])
    bare_s = median([r["s"] for r in m["bare"]])
    result.add(
        f"{n}: healthy check + its metric documents (median of {len(m['steady'])})",
        ms(with_s),
        f"history off, no metrics: {ms(bare_s)} ({(with_s - bare_s) * 1000:+.0f} ms)",
        "<= reference + 10%",
        with_s <= bare_s * 1.1,
    )
    cost = _monthly(m)
    result.add(
        "metrics' monthly cost, rate(1 minute)",
        f"${cost['fixed'] + cost['events']:.2f}/month",
        f"{cost['always']} metrics every run ${cost['fixed']:.2f} (before issue 21: 10, "
        f"${10 * METRIC_MONTH:.2f}); {cost['event_metrics']} event metrics at "
        f"{DEATHS_PER_MONTH} deaths/month (assumed) ${cost['events']:.2f}; their EMF lines "
        f"{cost['emf_bytes']:,.0f} B/run = ${cost['logs']:.2f} of logs; dashboard "
        f"${DASHBOARD_MONTH:.2f} beyond 3 free",
        "(no target)",
        None,
    )
    progress(
        f"metrics: steady writes {steady_writes}, check {ms(with_s)} vs {ms(bare_s)}, "
        f"cost ${cost['fixed'] + cost['events']:.2f}"
    )
    return result
