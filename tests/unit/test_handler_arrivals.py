"""The handler on arriving events: one check with the events' evidence, a partial batch
response for SQS that hands every record back when the lease is busy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomcheck.demo.arrivals import sqs_batch, sqs_record
from tests.unit.test_handler import Context, handler_module  # noqa: F401 - fixture

EVENTS = Path(__file__).resolve().parents[2] / "events"
OOM = json.loads((EVENTS / "ecs-task-stopped-oom.json").read_text())
WORKER = "celery@ip-10-0-1-5"  # the host of the sample's task ENI (10.0.1.5)


@pytest.fixture
def fleet(handler_module):  # noqa: F811 - the fixture above, by name
    control = handler_module._deps.inspector.app.control
    control.alive.clear()
    control.add(WORKER, 10)
    return handler_module, control


def test_an_sqs_batch_runs_one_check_with_its_evidence(fleet):
    # Given a worker seen alive by a scheduled check
    module, control = fleet
    module.handler({"mode": "check"}, Context())
    # When it stops answering and its task's OOM event arrives through SQS
    control.alive.remove(WORKER)
    batch = sqs_batch([OOM], sent_at=1_790_000_000.0)
    response = module.handler(batch, Context())
    # Then the batch is done (nothing handed back) and the alert went out in that invocation
    assert response == {"batchItemFailures": []}
    assert any("ip-10-0-1-5" in s and "OOM" in s for s in module._deps.publisher.sent), (
        module._deps.publisher.sent
    )


def test_a_busy_lease_hands_every_readable_record_back(fleet):
    module, _ = fleet
    module._deps.store.acquire("someone-else", module._deps.clock(), 600.0)
    batch = sqs_batch([OOM], sent_at=1_790_000_000.0)
    batch["Records"].append(sqs_record("garbage", sent_at=1_790_000_000.0))
    response = module.handler(batch, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
    assert module._deps.publisher.sent == []


def test_a_direct_eventbridge_event_returns_the_report(fleet, capsys):
    module, _ = fleet
    body = module.handler(OOM, Context())
    assert body["mode"] == "check" and body["stats"]["arrived_evidence"] == 2
    assert body["stats"]["arrived_events"] == 1


def test_a_malformed_batch_is_logged_and_not_failed(fleet, caplog):
    module, _ = fleet
    batch = {"Records": [sqs_record("{not json", sent_at=1.0)]}
    assert module.handler(batch, Context()) == {"batchItemFailures": []}
    [dropped] = [r for r in caplog.records if r.getMessage() == "event dropped"]
    assert "body is not JSON" in dropped.reason and dropped.levelname == "WARNING"
