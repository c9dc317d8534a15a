"""A check's cost on Amazon SQS: 20 Celery queues and their dead-letter queues on a moto server.

    python -m bench --only sqs

Figures: SQS API calls per check (the first, which looks up the queue URLs, and a steady one),
its time (median of N), the same with messages in a dead-letter queue (the look), and the
monthly SQS request cost at the default schedule (rate(1 minute)). The reference, measured in the
same run: what a check did before Celery on SQS was supported, a remote-control broadcast on
sqs:// (kombu's SQS transport, as the inspector used it): its time and the botocore calls it
makes (kombu sends its receive polls over pycurl, which this count does not see: a lower bound),
and the queues it leaves created.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from bench.common import Result, moto_server, progress
from oomcheck.config.settings import Settings
from oomcheck.model import Mode
from oomcheck.runner import run_once
from oomcheck.wiring import build_deps

QUEUES = [f"q{i:02d}" for i in range(19)] + ["celery"]
RUNS_PER_MONTH = 43_200  # rate(1 minute), 30 days
SQS_PRICE_PER_MILLION = 0.40  # standard queues, us-east-1, after the 1M free requests


class CallCounter:
    """Counts the botocore API calls made in this process (any client) while on."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.on = False

    def install(self) -> Callable[[], None]:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if counter.on:
                service = client.meta.service_model.service_name
                counter.calls.append(f"{service}:{operation}:{params.get('QueueUrl', '')}")
            return original(client, operation, params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]

        def restore() -> None:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

        return restore

    def live_receives(self) -> int:
        """Receives from a queue that is not a dead-letter queue, in the last measure."""
        return sum(
            1 for c in self.calls if c.startswith("sqs:ReceiveMessage:") and not c.endswith("-dlq")
        )

    def measure(self, call: Callable[[], object]) -> tuple[int, float]:
        self.calls.clear()
        self.on = True
        t0 = time.perf_counter()
        try:
            call()
        finally:
            self.on = False
        return len([c for c in self.calls if c.startswith("sqs:")]), (
            time.perf_counter() - t0
        ) * 1000


def _queues(sqs: Any) -> None:
    for name in QUEUES:
        dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": "1800",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"}),
            },
        )["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="e30=")


def monthly(calls: float) -> float:
    return calls * RUNS_PER_MONTH * SQS_PRICE_PER_MILLION / 1e6


def _reference(counter: CallCounter, sqs: Any) -> tuple[int, float, int]:
    """Before: a remote-control broadcast on sqs:// (what each check did), 1 s timeout."""
    from celery import Celery

    before = set(sqs.list_queues().get("QueueUrls", []))
    app = Celery("bench", broker="sqs://", set_as_current=False)
    try:
        calls, ms = counter.measure(lambda: app.control.inspect(timeout=1.0).ping())
    finally:
        app.close()
    created = set(sqs.list_queues().get("QueueUrls", [])) - before
    return calls, ms, len(created)


def run(quick: bool = False) -> Result:
    runs = 5 if quick else 30
    result = Result("sqs", tag="Q")
    counter = CallCounter()
    restore = counter.install()
    try:
        with moto_server(), tempfile.TemporaryDirectory() as tmp:
            sqs = boto3.client("sqs")
            _queues(sqs)
            settings = Settings(
                broker_url="sqs://",
                queues=tuple(QUEUES),
                state_file=str(Path(tmp) / "state.json"),
            )
            deps = build_deps(settings, write=lambda _: None)
            first_calls, first_ms = counter.measure(lambda: run_once(deps, Mode.CHECK))
            steady = []
            live_receives = 0
            for _ in range(runs):
                steady.append(counter.measure(lambda: run_once(deps, Mode.CHECK)))
                live_receives += counter.live_receives()
            steady_calls = statistics.median(c for c, _ in steady)
            steady_ms = statistics.median(ms for _, ms in steady)
            progress(
                f"sqs: first {first_calls} calls, steady {steady_calls} calls {steady_ms:.1f} ms"
            )
            dlq = sqs.get_queue_url(QueueName="celery-dlq")["QueueUrl"]
            for i in range(3):
                sqs.send_message(QueueUrl=dlq, MessageBody=f"dead-{i}")
            dead = []
            for _ in range(runs):
                dead.append(counter.measure(lambda: run_once(deps, Mode.CHECK)))
                live_receives += counter.live_receives()
            dead_calls = statistics.median(c for c, _ in dead)
            dead_ms = statistics.median(ms for _, ms in dead)
            ref_calls, ref_ms, ref_created = _reference(counter, sqs)
    finally:
        restore()
    result.add(
        f"check on SQS, {len(QUEUES)} queues + {len(QUEUES)} DLQs: SQS calls (first / steady)",
        f"{first_calls} / {steady_calls:.0f} (the first in {first_ms:.0f} ms)",
        f"before: a broadcast, >= {ref_calls} calls (+ pycurl polls), {ref_created} queue(s) left",
        f"no receive from a live queue ({live_receives} in {2 * runs} checks)",
        live_receives == 0,
    )
    result.add(
        f"check on SQS, time (median of {runs})",
        f"{steady_ms:.1f} ms; with 3 dead letters {dead_ms:.1f} ms ({dead_calls:.0f} calls)",
        f"before: {ref_ms:.0f} ms (one broadcast, 1 s timeout, kombu's SQS transport)",
        "< 300 ms",
        steady_ms < 300,
    )
    result.add(
        "SQS requests per month at rate(1 minute)",
        f"${monthly(steady_calls):.2f} ({steady_calls * RUNS_PER_MONTH / 1e6:.2f} M requests, "
        "before the free 1 M)",
        f"before: >= ${monthly(ref_calls):.2f}",
        "(informational)",
        None,
    )
    result.notes.append(
        "sqs: moto server on loopback (AWS adds its latency per call: about 10-20 ms each "
        "in-region); the first check also looks up every queue URL (kept for the process). "
        "SQS bills in 64 KB chunks at $0.40 per million requests after the first million free."
    )
    return result
