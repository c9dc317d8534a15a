"""Settings, redaction, inspector reply parsing: the edges of the system."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from oomcheck.config.settings import ENV_VARS, VARIABLES, SettingsError, from_env, resolve_reference
from oomcheck.redact import scrub
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


# --- validated at the edge: numbers, URLs -----------------------------------------------------

BROKER = {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:6379/0"}
NUMERIC = [v for v in VARIABLES if v.parse.__qualname__.startswith(("seconds", "count"))]


@pytest.mark.parametrize("variable", [v.name for v in NUMERIC])
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "-1", "1e400", "soon"])
def test_numbers_must_be_finite_and_in_range(variable, raw):
    with pytest.raises(SettingsError) as info:
        from_env({**BROKER, variable: raw})
    message = str(info.value)
    assert message.startswith(variable + " must be ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("OOMCHECK_WATCH_INTERVAL", "0"),
        ("OOMCHECK_INSPECT_TIMEOUT", "0"),
        ("OOMCHECK_REPING_TIMEOUT", "0"),
        ("OOMCHECK_VISIBILITY_TIMEOUT", "0"),
        ("OOMCHECK_POISON_KILLS", "0"),
        ("OOMCHECK_SOURCE_ALERT_AFTER", "0"),
        ("OOMCHECK_SCAN_BUDGET", "0"),
        ("OOMCHECK_DEFAULT_TASK_LIMIT", "0"),
        ("OOMCHECK_REMIND_AFTER", "1"),
        ("OOMCHECK_WATCH_INTERVAL", "901"),
        ("OOMCHECK_INSPECT_TIMEOUT", "3600"),
        ("OOMCHECK_POISON_KILLS", "2.5"),
    ],
)
def test_zero_or_out_of_range_where_it_makes_no_sense(variable, raw):
    with pytest.raises(SettingsError, match=f"^{variable} must be"):
        from_env({**BROKER, variable: raw})


def test_zero_expiry_means_no_ttl_and_empty_means_default():
    settings = from_env(
        {
            **BROKER,
            "OOMCHECK_RESULT_EXPIRES": "0",
            "OOMCHECK_WATCH_INTERVAL": " ",
            "OOMCHECK_POISON_KILLS": "",
        }
    )
    assert settings.result_expires_s is None
    assert settings.watch_interval_s == 5.0 and settings.policy.poison_kills == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OOMCHECK_TASK_LIMITS": '{"app.t": NaN}'}, "OOMCHECK_TASK_LIMITS must be plain JSON"),
        ({"OOMCHECK_TASK_LIMITS": '{"app.t": 1e999}'}, "OOMCHECK_TASK_LIMITS ['app.t'] must be"),
        ({"OOMCHECK_TASK_LIMITS": '{"app.t": true}'}, "OOMCHECK_TASK_LIMITS ['app.t'] must be"),
        ({"OOMCHECK_WORKER_MAP": "[" * 100_000}, "OOMCHECK_WORKER_MAP must be"),
        (
            {"OOMCHECK_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": -5}'},
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS visibility_timeout must be",
        ),
        (
            {"OOMCHECK_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": Infinity}'},
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS must be plain JSON",
        ),
    ],
)
def test_json_settings_reject_non_finite_and_hostile_values(env, message):
    with pytest.raises(SettingsError) as info:
        from_env({**BROKER, **env})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_env_vars_is_the_table():
    assert set(ENV_VARS) == {v.name for v in VARIABLES} | {
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
    }
    assert len(ENV_VARS) == len(set(ENV_VARS))


PASSWORDS = [
    "pa;ss-word",
    "p@ss@word",
    "pass/word",
    "pa#ssword",
    "pass?word",
    "pa%ssword",
    "p:a;s@s/w#o?r%d",
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "redis://:{pw}@cache.internal:6379/2",
        "rediss://user:{pw}@cache.internal:6380/0?ssl_cert_reqs=required",
        "redis+cluster://:{pw}@10.0.0.1:7000,10.0.0.2:7000",
        "unix://:{pw}@/var/run/redis.sock?db=3",
    ],
)
def test_passwords_with_reserved_characters_are_read_whole_and_masked(password, template):
    url = template.format(pw=password)
    settings = from_env(
        {"OOMCHECK_BROKER_URL": "amqp://guest@rabbit//", "OOMCHECK_RESULT_BACKEND": url}
    )
    assert password in settings.secrets()
    assert settings.backend_is_redis
    message = f"Error connecting with {url}: refused ({password})"
    assert password not in scrub(message, settings.secrets())


def test_sentinel_password_with_a_semicolon_and_sentinel_kwargs_password_are_secrets():
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "sentinel://:a;b@s1:26379;sentinel://:a;b@s2:26379",
            "OOMCHECK_BROKER_TRANSPORT_OPTIONS": (
                '{"master_name": "m", "sentinel_kwargs": {"password": "sentinel-pw"}}'
            ),
        }
    )
    assert set(settings.secrets()) >= {"a;b", "sentinel-pw"}


@pytest.mark.parametrize(
    ("url", "wanted"),
    [
        ("redis://:hunter2@h:6379/abc", "database"),
        ("redis://:hunter2@h:port/0", "port"),
        ("redis://:hunter2@h:70000/0", "port"),
        ("redis://:hunter2@h:6379/0?db=x", "db must be a number"),
        ("redis://:hunter2@a:1,b:2/0", "several hosts"),
        ("redis+cluster://:hunter2@a:7000/3", "only database 0"),
        ("rediss://:hunter2@h/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs"),
        ("redis://:hunter2@h/0?ssl_cert_reqs=required", "rediss://"),
        ("sentinel://:hunter2@s1:26379", "master_name"),
        ("sentinel://:hunter2@", "no host"),
        ("unix://:hunter2@relative/path.sock", "absolute path"),
        ("redis://:hunter2/0", "port"),  # the "@host" left out: the password is read as a port
        ("hunter2", "must be a URL"),
        ("redis://:hunter2@[::1/0", "IPv6"),
    ],
)
def test_bad_urls_are_one_line_naming_the_setting_never_the_password(url, wanted):
    with pytest.raises(SettingsError) as info:
        from_env({"OOMCHECK_BROKER_URL": "redis://127.0.0.1/0", "OOMCHECK_RESULT_BACKEND": url})
    message = str(info.value)
    assert message.startswith("OOMCHECK_RESULT_BACKEND")
    assert wanted in message
    assert "hunter2" not in message and "hunter2" not in repr(info.value)
    assert "\n" not in message
    assert info.value.__cause__ is None


def test_a_flag_label_replaces_the_variable_in_messages():
    with pytest.raises(SettingsError, match=r"^--interval must be a number of seconds"):
        from_env(
            {**BROKER, "OOMCHECK_WATCH_INTERVAL": "nan"},
            labels={"OOMCHECK_WATCH_INTERVAL": "--interval"},
        )


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "rediss://h:6380/1?ssl_cert_reqs=none",
        "redis://h?virtual_host=/4",
        "redis+socket:///tmp/redis.sock?virtual_host=2",
        "socket:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=1&password=pw",
        "redis+cluster://a:7000,b:7001",
        "rediss+cluster://:pw@a:7000",
    ],
)
def test_every_redis_form_is_accepted(url):
    # kombu knows no unix:// or socket:// broker (tests/unit/test_broker_urls.py): as a broker
    # those are refused, as a result backend accepted
    broker = url if url.partition(":")[0] not in ("unix", "socket") else "redis://h:6379/0"
    settings = from_env({"OOMCHECK_BROKER_URL": broker, "OOMCHECK_RESULT_BACKEND": url})
    assert settings.broker_transport == "redis" and settings.backend_is_redis


def test_scrub_masks_the_pieces_a_parser_cut_a_password_into():
    # kombu splits a broker URL at ';': its error then quotes the first piece of the password
    password = "Pw9x;tail-of-it@more"
    message = "ValueError: Port could not be cast to integer value as 'Pw9x'; tail-of-it and more"
    cleaned = scrub(message, [password])
    assert "Pw9x" not in cleaned and "tail-of-it" not in cleaned
    assert "Pw9x%3Btail" not in scrub("url has Pw9x%3Btail-of-it%40more", [password])
