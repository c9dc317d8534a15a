"""Alerts as a person and a machine read them, and their delivery through SNS."""

from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from oomcheck.alerting.outbox import batches
from oomcheck.alerting.render import (
    SNS_MAX_BYTES,
    PublishError,
    fit,
    render,
    request_size,
    sns_request,
    subject_for,
)
from oomcheck.alerting.sns import SnsAlerter
from oomcheck.model import Action, Cause, Finding, Kind, PendingAlert, Severity, TaskFate, Verdict
from oomcheck.provision import subscribe_queue
from tests.unit.incidents import incident, state_of
from tests.unit.scenario import LIMITS, T0, Replay, obs, snap, started, task

W = "celery@ip-10-0-1-5.eu-west-1.compute.internal"


def _incident():
    replay = Replay(deliver=False)
    replay.step(
        obs(
            T0,
            [snap(W, active=[task("t-plain", acknowledged=True)], limits=LIMITS)],
            started_=[started("t-plain", W)],
        )
    )
    replay.step(obs(T0 + 60, [], started_=[started("t-plain", W)]))
    [incident] = replay.state.incidents.values()
    return incident


def test_email_body_says_what_died_each_task_fate_and_what_to_do():
    message = render(_incident(), Action.OPEN, T0 + 60)
    assert W in message.text
    assert "t-plain" in message.text and "LOST" in message.text
    assert "WHAT TO DO" in message.text and "EVIDENCE" in message.text
    assert message.payload["finding"]["tasks"][0]["verdict"] == "lost"
    assert message.payload["kind"] == "worker_lost" and message.payload["action"] == "open"


@pytest.mark.parametrize("action", list(Action))
def test_subject_fits_sns(action):
    long = Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker="celery@" + "x" * 300 + "\nbad",
        cause=Cause.OOM_KILLED,
        exit_code=137,
        tasks=tuple(TaskFate(str(i), "n", "STARTED", None, Verdict.LOST) for i in range(3)),
    )
    subject = subject_for(long, action)
    assert len(subject) < 100 and "\n" not in subject and subject.isascii()


def test_subject_names_cause_and_exit_code():
    finding = Finding(
        kind=Kind.WORKER_LOST,
        severity=Severity.CRITICAL,
        worker="celery@w1",
        cause=Cause.OOM_KILLED,
        exit_code=137,
    )
    assert subject_for(finding, Action.OPEN) == (
        "[oomcheck] CRITICAL: celery@w1 died, OOM-killed (exit 137)"
    )


def test_sns_delivers_text_to_email_and_json_to_sqs_with_filter_attributes():
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = subscribe_queue(sns, sqs, topic, "inbox")
        message = render(_incident(), Action.OPEN, T0 + 60)
        SnsAlerter(topic, client=sns).publish(message)
        [received] = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"])["Messages"]
        envelope = json.loads(received["Body"])
        assert envelope["Subject"] == message.subject
        payload = json.loads(envelope["Message"])
        assert payload["incident_id"] == message.incident_id
        assert payload["text"] == message.text
        assert envelope["MessageAttributes"]["kind"]["Value"] == "worker_lost"
        assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"


def test_sns_failure_is_a_publish_error_without_secrets():
    sns = boto3.client("sns", region_name="us-east-1")
    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
        with pytest.raises(PublishError, match="Throttling"):
            SnsAlerter("arn:aws:sns:us-east-1:123456789012:t", client=sns).publish(
                render(_incident(), Action.OPEN, T0)
            )


# ------------------------------------------------------------------ grouping, updates, size


def test_a_fleet_dying_in_one_run_is_one_message_listing_every_incident():
    # Given 12 workers OOM-killed in the same run, 340 tasks between them
    dead = [incident(i, tasks=30 if i < 4 else 27, awaiting=5 if i < 8 else 0) for i in range(12)]
    # When the outbox is rendered
    [batch] = batches(state_of(*dead))
    message = fit(batch, T0)
    # Then one message says how many died, why, and what became of the tasks
    assert (
        message.subject
        == "[oomcheck] CRITICAL: 12 workers died, OOM-killed (exit 137), 336 task(s)"
    )
    assert (
        "12 workers died, OOM-killed, exit 137, 336 task(s): 40 awaiting redelivery, 296 lost"
        in (message.text)
    )
    assert sorted(message.payload["incident_ids"]) == sorted(i.id for i in dead)
    assert [m["incident_id"] for m in message.payload["incidents"]] == [i.id for i in dead]
    assert all(i.id in message.text for i in dead)
    assert message.dedup_key.startswith("group:")


def test_only_opens_of_the_same_run_kind_and_cause_are_grouped():
    remind = incident(3, pending=(PendingAlert(Action.REMIND, T0),))
    resolve = incident(4, pending=(PendingAlert(Action.RESOLVE, T0),))
    todo = batches(
        state_of(
            incident(0),
            incident(1),
            incident(2, cause=Cause.KILLED),  # another cause
            incident(5, opened_at=T0 + 60),  # another run
            remind,
            resolve,
            incident(6, kind=Kind.CHILD_KILLED),
        )
    )
    assert sorted(sorted(i.id for i in b.incidents) for b in todo) == [
        ["inc-0000", "inc-0001"],
        ["inc-0002"],
        ["inc-0003"],
        ["inc-0004"],
        ["inc-0005"],
        ["inc-0006"],
    ]


def test_update_subject_says_what_changed_threaded_to_the_incident():
    first = incident(1, exit_code=None, cause=Cause.UNKNOWN, tasks=2)
    first = replace(first, alerts_sent=1)
    note = "now known: OOM-killed, exit 137"
    update = replace(first, pending=(PendingAlert(Action.UPDATE, T0 + 5, note=note, seq=1),))
    message = render(update, Action.UPDATE, T0 + 5)
    assert message.subject == (
        "[oomcheck] UPDATE CRITICAL: celery@worker-1 died - now known: OOM-killed, exit 137"
    )
    assert message.incident_id == first.id and message.payload["note"] == note
    assert message.dedup_key == f"{first.id}:update:1"
    assert message.text.startswith(f"UPDATE: {note}")


def test_dedup_key_is_stable_across_retries_and_differs_per_message():
    open_ = incident(1)
    assert render(open_, Action.OPEN, T0).dedup_key == render(open_, Action.OPEN, T0 + 60).dedup_key
    reminded = replace(open_, alerts_sent=1, pending=(PendingAlert(Action.REMIND, T0),))
    assert render(reminded, Action.REMIND, T0).dedup_key == f"{open_.id}:remind:1"
    assert render(open_, Action.OPEN, T0).dedup_key == f"{open_.id}:open:0"


@pytest.mark.parametrize("tasks", [100, 2_000, 20_000])
def test_any_incident_fits_sns_with_where_to_read_the_rest(tasks):
    message = render(incident(1, tasks=tasks), Action.OPEN, T0)
    assert request_size(sns_request(message)) <= SNS_MAX_BYTES
    listed = message.text.count("billing.tasks.rebuild_invoice_pdf [")
    assert listed >= 10  # the first tasks in full
    assert f"TASKS ({tasks})" in message.text
    assert f"... and {tasks - listed} more: `oomcheck audit`" in message.text
    assert message.payload["tasks_total"] == tasks


def test_a_huge_group_still_fits_in_its_reduced_form():
    dead = [incident(i, tasks=200) for i in range(400)]
    [batch] = batches(state_of(*dead))
    message = fit(batch, T0)
    assert request_size(sns_request(message)) <= SNS_MAX_BYTES
    assert message.payload["incidents_total"] == 400 and message.payload["reduced"] is True
    assert message.subject.startswith("[oomcheck] CRITICAL: 400 workers died")


def test_a_100_task_incident_is_delivered_through_sns_under_256_kib():
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        queue = subscribe_queue(sns, sqs, topic, "inbox")
        message = render(incident(1, tasks=100, awaiting=10), Action.OPEN, T0)
        SnsAlerter(topic, client=sns).publish(message)
        [received] = sqs.receive_message(QueueUrl=queue)["Messages"]
        envelope = json.loads(received["Body"])
        payload = json.loads(envelope["Message"])
        assert payload["tasks_total"] == 100 and payload["dedup_key"] == "inc-0001:open:0"
        assert envelope["MessageAttributes"]["dedup_key"]["Value"] == "inc-0001:open:0"
        assert len(payload["finding"]["tasks"]) == 50


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        ("InvalidParameter", True),
        ("InvalidParameterValue", True),
        ("Throttling", False),
        ("InternalError", False),
    ],
)
def test_publish_errors_say_whether_they_can_ever_pass(code, permanent):
    sns = boto3.client("sns", region_name="us-east-1")
    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code=code, http_status_code=400)
        with pytest.raises(PublishError) as caught:
            SnsAlerter("arn:aws:sns:us-east-1:123456789012:t", client=sns).publish(
                render(incident(1), Action.OPEN, T0)
            )
    assert caught.value.permanent is permanent and code in str(caught.value)


def test_memory_and_queue_subjects_name_the_worker_task_and_queue():
    from oomcheck.model import Finding, IncidentKey, Kind, Severity, TaskFate, Verdict

    running = TaskFate("t1", "reports.build", "STARTED", None, Verdict.RUNNING)
    pressure = Finding(
        kind=Kind.MEMORY_PRESSURE,
        severity=Severity.WARNING,
        worker="celery@w1",
        tasks=(running,),
        key=IncidentKey(Kind.MEMORY_PRESSURE, "celery@w1"),
    )
    assert subject_for(pressure, Action.OPEN) == (
        "[oomcheck] WARNING: celery@w1 near its memory limit: reports.build"
    )
    orphaned = Finding(
        kind=Kind.QUEUE_ORPHANED,
        severity=Severity.CRITICAL,
        worker=None,
        key=IncidentKey(Kind.QUEUE_ORPHANED, "reports"),
    )
    assert subject_for(orphaned, Action.OPEN) == (
        "[oomcheck] CRITICAL: queue reports has no live consumer"
    )


@pytest.mark.parametrize(
    ("kind", "worker", "line"),
    [
        pytest.param(Kind.BEAT_STOPPED, None, None, id="beat-names-no-worker"),
        pytest.param(Kind.QUEUE_ORPHANED, None, None, id="queue-names-no-worker"),
        pytest.param(Kind.OOM_KILL, None, "  Worker:     unknown", id="oom-of-an-unknown-worker"),
        pytest.param(Kind.WORKER_LOST, "celery@a", "  Worker:     celery@a", id="worker-named"),
    ],
)
def test_the_worker_line_only_where_the_kind_is_about_a_worker(kind, worker, line):
    base = incident(0, kind=kind)
    message = render(replace(base, finding=replace(base.finding, worker=worker)), Action.OPEN, T0)
    worker_lines = [x for x in message.text.splitlines() if x.startswith("  Worker:")]
    assert worker_lines == ([line] if line else [])
