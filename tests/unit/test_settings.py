"""Settings, invocation events, redaction, inspector reply parsing: the edges of the system."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from oomcheck.invocation import InvocationError, parse_invocation
from oomcheck.redact import scrub
from oomcheck.settings import SettingsError, from_env, resolve_reference
from oomcheck.sources.inspector import parse_active, parse_registered, pool_kind, snapshot_from


def test_minimal_environment_and_fallbacks():
    settings = from_env(
        {"CELERY_BROKER_URL": "redis://h:6379/0", "CELERY_RESULT_BACKEND": "redis://h:6379/1"}
    )
    assert settings.broker_url == "redis://h:6379/0"
    assert settings.result_backend == "redis://h:6379/1"
    assert settings.broker_transport == "redis" and settings.backend_is_redis
    assert settings.table is None and settings.policy.poison_kills == 3


def test_oomcheck_variables_win_and_parse():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "amqp://guest:pw@rabbit:5672//",
            "CELERY_BROKER_URL": "redis://ignored",
            "OOMCHECK_LOG_GROUPS": "/a, /b ,",
            "OOMCHECK_TASK_LIMITS": '{"app.report": 600}',
            "OOMCHECK_WORKER_MAP": '{"10.0.*": "celery@batch-*"}',
            "OOMCHECK_POISON_KILLS": "5",
            "OOMCHECK_RESULT_EXPIRES": "0",
        }
    )
    assert settings.broker_transport == "amqp"
    assert settings.log_groups == ("/a", "/b")
    assert settings.policy.task_expectations == {"app.report": 600.0}
    assert settings.policy.worker_map == {"10.0.*": "celery@batch-*"}
    assert settings.policy.poison_kills == 5
    assert settings.result_expires_s is None
    assert settings.secrets() == ("pw",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no broker"),
        ({"OOMCHECK_BROKER_URL": "redis://x", "OOMCHECK_POISON_KILLS": "many"}, "whole number"),
        ({"OOMCHECK_BROKER_URL": "redis://x", "OOMCHECK_REMIND_AFTER": "-1"}, "at least 60"),
        ({"OOMCHECK_BROKER_URL": "redis://x", "OOMCHECK_TASK_LIMITS": "[1]"}, "JSON object"),
        ({"OOMCHECK_BROKER_URL": "redis://x", "OOMCHECK_TASK_LIMITS": '{"a": 0}'}, "more than 0"),
        ({"OOMCHECK_BROKER_URL": "redis://x", "OOMCHECK_INSPECT_TIMEOUT": "0"}, "more than 0"),
    ],
)
def test_bad_settings_are_clear_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        from_env(env)


def test_ssm_and_secrets_manager_references_are_resolved():
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/oomcheck/broker", Value="redis://:pw@cache:6379/0", Type="SecureString"
        )
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="oomcheck/backend", SecretString="redis://:pw@cache:6379/1"
        )
        settings = from_env(
            {
                "OOMCHECK_BROKER_URL": "ssm:/oomcheck/broker",
                "OOMCHECK_RESULT_BACKEND": "secretsmanager:oomcheck/backend",
            }
        )
        assert settings.broker_url == "redis://:pw@cache:6379/0"
        assert settings.result_backend == "redis://:pw@cache:6379/1"
        with pytest.raises(SettingsError, match="could not read ssm parameter '/missing'"):
            resolve_reference("ssm:/missing")


def test_scrub_masks_url_passwords_and_known_secrets():
    text = "Error 111 connecting to redis://user:hunter22@10.0.0.1:6379/0 (token hunter22)"
    assert scrub(text, ["hunter22"]) == (
        "Error 111 connecting to redis://user:***@10.0.0.1:6379/0 (token ***)"
    )
    assert scrub("sentinel://:pw1@a:26379;sentinel://:pw1@b:26379") == (
        "sentinel://:***@a:26379;sentinel://:***@b:26379"
    )


@pytest.mark.parametrize(
    ("event", "mode", "duration"),
    [
        (None, "check", 0.0),
        (
            {
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": "2026-11-24T10:00:00Z",
                "id": "1",
                "detail": {},
                "region": "us-east-1",
                "resources": [],
                "account": "1",
                "version": "0",
            },
            "check",
            0.0,
        ),
        ({"mode": "check", "scheduled_time": "2026-11-24T10:00:00Z"}, "check", 0.0),
        ({"mode": "audit"}, "audit", 0.0),
        ({"mode": "watch"}, "watch", 50.0),
        ({"mode": "watch", "duration_s": "20"}, "watch", 20.0),
    ],
)
def test_invocations(event, mode, duration):
    invocation = parse_invocation(event)
    assert (invocation.mode, invocation.duration_s) == (mode, duration)


@pytest.mark.parametrize(
    "event",
    [
        [1],
        {"mode": "delete-everything"},
        {"mode": "watch", "duration_s": 5000},
        {"mode": "watch", "duration_s": True},
        {"mode": "watch", "duration_s": "soon"},
    ],
)
def test_bad_invocations_are_refused(event):
    with pytest.raises(InvocationError):
        parse_invocation(event)


def test_registered_strings_become_limits():
    limits = parse_registered(
        [
            "app.report [time_limit=30 soft_time_limit=20 acks_late=True]",
            "app.loop [acks_late=True reject_on_worker_lost=True]",
            "app.plain",
            "garbage [[",
        ]
    )
    assert limits["app.report"].time_limit == 30.0 and limits["app.report"].acks_late is True
    assert limits["app.loop"].reject_on_worker_lost is True
    assert limits["app.loop"].time_limit is None
    assert limits["app.plain"].acks_late is None
    assert "garbage" not in limits


def test_pool_kinds_and_snapshot():
    assert [
        pool_kind(x)
        for x in (
            "celery.concurrency.prefork:TaskPool",
            "celery.concurrency.solo:TaskPool",
            "celery.concurrency.thread:TaskPool",
            "celery.concurrency.gevent:TaskPool",
            "mypkg.pool:Custom",
            None,
        )
    ] == ["prefork", "solo", "threads", "gevent", "custom", "prefork"]
    snap = snapshot_from(
        "w@h",
        {
            "pid": 5,
            "uptime": 12,
            "pool": {
                "implementation": "celery.concurrency.prefork:TaskPool",
                "processes": [7, 6],
                "max-concurrency": 2,
            },
            "rusage": {"maxrss": 1000},
        },
    )
    assert (snap.pid, snap.uptime_s, snap.pool_pids, snap.max_concurrency, snap.rss_kib) == (
        5,
        12.0,
        (6, 7),
        2,
        1000,
    )


def test_active_replies_tolerate_junk():
    tasks = parse_active(
        [
            {
                "id": "b",
                "name": "n",
                "worker_pid": 7,
                "time_start": 1.5,
                "acknowledged": True,
                "delivery_info": {"redelivered": True},
            },
            {"no": "id"},
            "junk",
            {"id": "a", "worker_pid": "x"},
        ]
    )
    assert [(t.id, t.worker_pid, t.redelivered) for t in tasks] == [
        ("a", None, False),
        ("b", 7, True),
    ]


def test_celery_transport_options_feed_prefixes_and_visibility():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "sentinel://s1:26379;sentinel://s2:26379",
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS": '{"master_name": "mymaster", '
            '"global_keyprefix": "app1:", "visibility_timeout": 7200}',
            "OOMCHECK_RESULT_TRANSPORT_OPTIONS": '{"global_keyprefix": "res:"}',
            "OOMCHECK_RESULT_FAILURE_EXPIRES": "3600",
        }
    )
    assert settings.broker_transport_options["master_name"] == "mymaster"
    assert (settings.broker_keyprefix, settings.result_keyprefix) == ("app1:", "res:")
    assert settings.policy.visibility_timeout_s == 7200.0
    assert settings.result_failure_expires_s == 3600.0
    assert settings.broker_transport == "redis"
