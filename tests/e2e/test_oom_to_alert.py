"""End to end: a real kernel OOM kill in a memory cgroup -> the alert, read back from SNS."""

from __future__ import annotations

import pytest

from oomcheck.demo.run import WORKER, run_scenario
from oomcheck.demo.workers import memory_cgroup_available

pytestmark = pytest.mark.e2e


def test_kernel_oom_kill_reaches_the_on_call_inbox(capsys):
    ok, why = memory_cgroup_available()
    if not ok:
        print(f"no memory cgroup ({why}): the worker is SIGKILLed instead of OOM-killed")
    # Given a worker in a 200 MiB memory cgroup, a checker on a moto server (DynamoDB, SNS, SQS,
    # CloudWatch Logs) and a supervisor that reports the container's death as ECS would
    result = run_scenario(use_cgroup=ok, out=lambda _: None)
    # Then exactly one alert reached the SQS inbox subscribed to the topic
    assert result is not None, "no alert was published"
    assert result.real_oom == ok
    assert len(result.received) == 1
    [alert] = result.received
    payload = alert["payload"]
    assert payload["kind"] == "worker_lost" and payload["action"] == "open"
    finding = payload["finding"]
    assert finding["worker"] == WORKER
    # the task that ate the memory is named, with its fate (plain task: acked at start)
    assert [(t["id"], t["verdict"]) for t in finding["tasks"]] == [(result.task_id, "lost")]
    if ok:
        # the cause comes from the ECS task-stopped event in CloudWatch: exit 137, OOM
        assert (finding["cause"], finding["exit_code"]) == ("oom_killed", 137)
        assert "OOM-killed (exit 137)" in alert["subject"]
    assert WORKER in alert["subject"] and len(alert["subject"]) < 100
    assert result.task_id in payload["text"]
    assert result.kill_to_alert_s < 30
