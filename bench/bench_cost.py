"""Monthly cost at rate(1 minute), from what the other benchmarks measured in this run.

Scheduled: 43,200 invocations a month, one check each, billed for the measured warm invocation
of the real handler (bench_check: URLs from SSM, state in DynamoDB, SNS topic, ECS log group, all
on a moto server). Watch: the same 43,200 invocations, each a 50 s watch (a check every 5 s),
billed for as long as the watch runs: runner.watch's last check starts 45 s in.

DynamoDB request units and the log bytes per invocation are measured too (the handler's own
output: Powertools log line and EMF metrics), plus Lambda's START/END/REPORT lines. The fleet
benchmark's per-run units show what a 5,000-worker fleet would cost in DynamoDB.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from bench.common import ROOT, Result, ms, progress

RUNS_PER_MONTH = 60 * 24 * 30  # rate(1 minute), 30-day month: 43,200
# Prices as given in the issue: AWS list prices, us-east-1. The DynamoDB on-demand prices are
# those in effect since the 2024-11-01 price cut. Not re-checked online by this benchmark.
PRICES_AS_OF = "us-east-1 list prices given in the issue (DynamoDB on-demand as of 2024-11)"
LAMBDA_ARM_GB_S = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1e6
DYNAMO_WRU = 0.625 / 1e6
DYNAMO_RRU = 0.125 / 1e6
LOGS_INGEST_GB = 0.50
METRIC_MONTH = 0.30
ALARM_MONTH = 0.10
KMS_KEY_MONTH = 1.00
SQS_REQUEST = 0.40 / 1e6
# The SQS event source mapping long-polls (20 s) with a few pollers even when the queue is empty;
# five is taken here (an assumption: AWS starts there and does not publish the idle count).
ESM_POLLERS = 5
ESM_IDLE_REQUESTS = ESM_POLLERS * 3 * 60 * 24 * 30
# task stops a month that start a check (deploys, scale-ins, deaths): an assumption, shown
EVENT_CHECKS_PER_MONTH = 3000


def _metric_names() -> set[str]:
    """The handler's custom metrics emitted every run: oomcheck.report.metrics.ALWAYS (the
    run-level ones and the open incidents gauge), and Powertools' ColdStart
    (``capture_cold_start_metric``). Event counts (deaths, kills...) cost only in the hours
    they happen: bench_metrics prices them."""
    from oomcheck.report.metrics import ALWAYS

    text = (ROOT / "functions" / "checker" / "app.py").read_text()
    names = set(ALWAYS)
    if "capture_cold_start_metric=True" in text:
        names.add("ColdStart")
    return names


def _alarms() -> tuple[int, int]:
    """template.yaml's CloudWatch alarms: (always there, there only with the event path on)."""
    resources = re.split(r"\n  (?=\w+:\n    Type: )", (ROOT / "template.yaml").read_text())
    alarms = [r for r in resources if "\n    Type: AWS::CloudWatch::Alarm\n" in r]
    # a resource's Condition stands before its Properties
    heads = [r.split("\n    Properties:")[0] + "\n" for r in alarms]
    event_path = sum(1 for head in heads if "\n    Condition: EcsEventsOn\n" in head)
    return len(alarms) - event_path, event_path


METRICS = len(_metric_names())
ALARMS, EVENT_PATH_ALARMS = _alarms()
# Lambda's own lines per invocation: START (~90 B), END (~60 B), REPORT (~200 B)
PLATFORM_LOG_BYTES = 350
# CloudWatch Logs counts 26 bytes of metadata per log event (an upper bound here)
LOG_EVENT_OVERHEAD = 26


# template.yaml's FunctionMemory "auto": checks (scheduled, event-driven) get 1536 MB, a watch
# 256 MB (test_memory.py holds the template to these)
CHECK_MEMORY_MB = 1536
WATCH_MEMORY_MB = 256


def _gb_s(seconds: float, memory_mb: int) -> float:
    # billed in 1 ms steps
    return math.ceil(seconds * 1000) / 1000 * memory_mb / 1024


def _at(memory_mb: int, wall_s: float, cpu_s: float) -> float:
    """A run measured here on a full core, as long as it takes at ``memory_mb``: Lambda gives
    memory/1,769 of a vCPU, which stretches the CPU part only."""
    return wall_s - cpu_s + cpu_s * max(1.0, 1769 / memory_mb)


def _dollars(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.1 else f"${value:,.4f}"


def run(quick: bool = False, facts: dict[str, Any] | None = None) -> Result:
    from bench.bench_latency import DEPLOYED_WATCH_S, watch_check_times

    result = Result("cost", tag="$")
    facts = facts or {}
    handler = facts.get("handler")
    if handler is None:
        from bench.bench_check import handler_standalone

        progress("cost: no handler figures from bench_check in this run; measuring them")
        handler = handler_standalone(quick)

    warm = handler["warm_s"]
    check_s = _at(CHECK_MEMORY_MB, warm, handler["warm_cpu_s"])
    watch_check_s = _at(WATCH_MEMORY_MB, warm, handler["warm_cpu_s"])
    # billed until the watch returns: on Redis it watches the broker to its last half second
    watch_checks, watch_s = watch_check_times(polls=True, check_s=watch_check_s)
    watch_runs = len(watch_checks)
    log_bytes = handler["log_bytes"] + PLATFORM_LOG_BYTES
    log_bytes += LOG_EVENT_OVERHEAD * (handler["log_lines"] + 3)
    fixed = METRICS * METRIC_MONTH + ALARMS * ALARM_MONTH + KMS_KEY_MONTH

    def lambda_cost(seconds: float, memory_mb: int = CHECK_MEMORY_MB) -> float:
        return RUNS_PER_MONTH * (_gb_s(seconds, memory_mb) * LAMBDA_ARM_GB_S + LAMBDA_REQUEST)

    def dynamo_cost(wru: float, rru: float, runs: int) -> float:
        return RUNS_PER_MONTH * runs * (wru * DYNAMO_WRU + rru * DYNAMO_RRU)

    logs = RUNS_PER_MONTH * log_bytes / 2**30 * LOGS_INGEST_GB
    wru, rru = handler["dynamo_wru"], handler["dynamo_rru"]
    sched = {
        "lambda": lambda_cost(check_s),
        "dynamodb": dynamo_cost(wru, rru, 1),
        "logs": logs,
        "fixed": fixed,
    }
    watch = {
        "lambda": lambda_cost(watch_s, WATCH_MEMORY_MB),
        "dynamodb": dynamo_cost(wru, rru, watch_runs),
        "logs": logs,
        "fixed": fixed,
    }
    result.add(
        f"Lambda arm64 {CHECK_MEMORY_MB} MB, scheduled: 43,200 checks/month",
        f"{_dollars(sched['lambda'])}/month",
        f"measured warm invocation {ms(warm)} (CPU {ms(handler['warm_cpu_s'])}), billed as "
        f"{ms(check_s)} at {CHECK_MEMORY_MB} MB's CPU share",
        "(no target)",
        None,
    )
    result.add(
        "DynamoDB on-demand, scheduled",
        f"{_dollars(sched['dynamodb'])}/month",
        f"measured per run: {wru:.0f} WRU (lease take+release, no item changed), {rru:.0f} RRU",
        "(no target)",
        None,
    )
    result.add(
        "CloudWatch Logs ingestion (either mode)",
        f"{_dollars(logs)}/month",
        f"{log_bytes:,.0f} B/invocation: handler {handler['log_bytes']:,.0f} B measured "
        f"(log line + EMF) + Lambda's lines",
        "(no target)",
        None,
    )
    result.add(
        f"fixed: {METRICS} EMF metrics, {ALARMS} alarms, 1 KMS key",
        f"{_dollars(fixed)}/month",
        f"${METRIC_MONTH:.2f}/metric, ${ALARM_MONTH:.2f}/alarm, ${KMS_KEY_MONTH:.2f}/key",
        "(no target)",
        None,
    )
    result.add(
        "TOTAL scheduled, rate(1 minute)",
        f"{_dollars(sum(sched.values()))}/month",
        f"of which fixed {_dollars(fixed)}; usage {_dollars(sum(sched.values()) - fixed)}",
        "(no target)",
        None,
    )
    result.add(
        f"Lambda {WATCH_MEMORY_MB} MB, watch: {watch_runs} checks per invocation, every minute",
        f"{_dollars(watch['lambda'])}/month",
        f"billed {watch_s:.1f} s/invocation: between checks, and after the last, it watches "
        "the broker's subscriptions (Redis)",
        "(no target)",
        None,
    )
    result.add(
        "DynamoDB on-demand, watch",
        f"{_dollars(watch['dynamodb'])}/month",
        f"{watch_runs} runs x ({wru:.0f} WRU + {rru:.0f} RRU) per invocation",
        "(no target)",
        None,
    )
    result.add(
        f"TOTAL watch (rate(1 minute), WatchSeconds {DEPLOYED_WATCH_S:.0f})",
        f"{_dollars(sum(watch.values()))}/month",
        f"scheduled: {_dollars(sum(sched.values()))}/month",
        "(no target)",
        None,
    )
    events = {
        "lambda": EVENT_CHECKS_PER_MONTH / RUNS_PER_MONTH * lambda_cost(check_s),
        "dynamodb": dynamo_cost(wru, rru, 1) * EVENT_CHECKS_PER_MONTH / RUNS_PER_MONTH,
        "sqs": (ESM_IDLE_REQUESTS + 2 * EVENT_CHECKS_PER_MONTH) * SQS_REQUEST,
        "alarm": EVENT_PATH_ALARMS * ALARM_MONTH,
    }
    result.add(
        "event path on top of scheduled: SQS polling, event-started checks, DLQ alarm",
        f"{_dollars(sum(events.values()))}/month",
        f"{ESM_IDLE_REQUESTS:,} idle long polls ({ESM_POLLERS} pollers, assumed) + "
        f"{EVENT_CHECKS_PER_MONTH:,} event checks (assumed) at the measured warm invocation",
        "(no target)",
        None,
    )
    result.add(
        "TOTAL event-driven (rate(1 minute) kept for late and missed events, + events)",
        f"{_dollars(sum(sched.values()) + sum(events.values()))}/month",
        f"scheduled {_dollars(sum(sched.values()))}; watch {_dollars(sum(watch.values()))}",
        "(no target)",
        None,
    )
    result.facts["event_driven"] = events
    result.add(
        "peak RSS of a check process (handler, cold + warm invocations)",
        f"{handler['peak_rss_mb']:.0f} MB",
        f"Lambda memory setting {WATCH_MEMORY_MB} MB in watch mode, {CHECK_MEMORY_MB} MB "
        "otherwise (template.yaml)",
        f"< {WATCH_MEMORY_MB} MB",
        handler["peak_rss_mb"] < WATCH_MEMORY_MB,
    )
    for size in (1000, 5000):
        fleet_rru = facts.get(f"steady_rru_{size}")
        fleet_wru = facts.get(f"steady_wru_{size}")
        run_s = facts.get(f"steady_run_s_{size}")
        if fleet_rru is None or fleet_wru is None or run_s is None:
            continue
        d_sched = dynamo_cost(fleet_wru, fleet_rru, 1)
        d_watch = dynamo_cost(fleet_wru, fleet_rru, watch_runs)
        factor = 1769 / CHECK_MEMORY_MB
        run_lambda = run_s * factor
        result.add(
            f"{size:,} workers (fleet bench): DynamoDB, scheduled / watch",
            f"{_dollars(d_sched)} / {_dollars(d_watch)} per month",
            f"{fleet_rru:,} RRU per run: "
            + (
                "a warm store reads nothing it wrote itself"
                if fleet_rru == 0
                else "the run reads the whole state again"
            ),
            "(no target)",
            None,
        )
        result.add(
            f"{size:,} workers: Lambda, scheduled (run ~{run_lambda:.1f} s at "
            f"{CHECK_MEMORY_MB} MB)",
            f"{_dollars(lambda_cost(run_lambda))}/month",
            f"oomcheck's share of the run here {ms(run_s)} x {factor:.1f} (CPU)",
            "(no target)",
            None,
        )
    result.notes.append(
        f"cost: prices: Lambda arm64 ${LAMBDA_ARM_GB_S:.10f}/GB-s + $0.20/1M requests; "
        "DynamoDB on-demand $0.625/1M WRU, $0.125/1M RRU; CloudWatch Logs "
        f"${LOGS_INGEST_GB:.2f}/GB ingested; custom metric ${METRIC_MONTH:.2f}/month; alarm "
        f"${ALARM_MONTH:.2f}/month; KMS key ${KMS_KEY_MONTH:.2f}/month. Source and date: "
        f"{PRICES_AS_OF}; computed "
        f"{datetime.now(tz=UTC):%Y-%m-%d}. 30-day month. Not included: free tiers, SNS "
        "publishes (alerts are rare), SQS's free tier (1M requests), EventBridge Scheduler "
        "($1/1M after 14M free), log "
        "storage, cold-start init time (a warm container serves a 1-minute schedule), and a "
        "VPC's NAT gateway or interface endpoints, which would cost more than everything above."
    )
    result.notes.append(
        "cost: DynamoDB units are computed from the sizes of the items each call carries "
        "(UpdateItem 1 WRU/KB; TransactWriteItems 2 WRU/KB per item, a ConditionCheck 2; "
        "consistent Query 1 RRU per 4 KB). Watch mode logs are taken to be the size of a "
        "check's (the handler logs one combined report per invocation)."
    )
    _memory_rows(result, handler, watch_s, facts)
    result.facts.update(scheduled=sched, watch=watch)
    return result


MEMORY_CHOICES = (256, 512, 768, 1024, 1536, 1769)


def _memory_rows(
    result: Result, handler: dict[str, Any], watch_s: float, facts: dict[str, Any]
) -> None:
    """What each memory setting costs a month, beside the cold event path it buys (bench_cold's
    figure from the same run). Lambda gives CPU in proportion to memory (1,769 MB = 1 vCPU), so a
    check's CPU part shrinks as memory grows while its waits (the broker, DynamoDB, SNS) do not:
    a scheduled check costs about the same at any size and a watch, which mostly waits, costs in
    proportion to memory."""
    warm, cpu = handler["warm_s"], handler["warm_cpu_s"]
    for memory in MEMORY_CHOICES:
        factor = max(1.0, 1769 / memory)
        check_s = _at(memory, warm, cpu)
        gb = memory / 1024

        def monthly(seconds: float, gb: float = gb) -> float:
            billed = math.ceil(seconds * 1000) / 1000
            return RUNS_PER_MONTH * (billed * gb * LAMBDA_ARM_GB_S + LAMBDA_REQUEST)

        cold = facts.get(f"cold_{memory}_s")
        result.add(
            f"memory {memory} MB: Lambda scheduled / watch, per month",
            f"{_dollars(monthly(check_s))} / {_dollars(monthly(watch_s))}",
            f"a check billed {ms(check_s)} (CPU {ms(cpu)} x {factor:.1f}); cold event path "
            + (f"{ms(cold)} (bench_cold, this run)" if cold else "not measured in this run"),
            "(choice)",
            None,
        )


if __name__ == "__main__":
    import sys

    from bench.common import render_table

    print(render_table([run("--quick" in sys.argv)], "bench_cost"))
