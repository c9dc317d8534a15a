"""One broker for every connection: the URL kombu is given reads back as the password typed,
remote control's app connects where the settings say whatever ``CELERY_*`` variables hold, and a
socket form kombu cannot read is refused up front. The real-worker counterparts are
tests/integration/test_broker_environment.py and tests/integration/test_broker_passwords.py."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from kombu.utils.url import parse_url

from oomcheck.config.settings import SettingsError, from_env
from oomcheck.config.urls import for_kombu
from oomcheck.sources.inspector import CeleryInspector

RESERVED = [";", "/", "@", "#", "?", "%", ":"]


@pytest.mark.parametrize("char", RESERVED)
@pytest.mark.parametrize(
    ("template", "host", "port", "vhost"),
    [
        ("redis://:{pw}@cache.internal:6380/4", "cache.internal", 6380, "4"),
        ("rediss://alice:{pw}@cache.internal:6380/0", "cache.internal", 6380, "0"),
        ("amqp://guest:{pw}@rabbit:5672/shop", "rabbit", 5672, "shop"),
    ],
)
def test_kombu_reads_the_password_as_typed(
    char: str, template: str, host: str, port: int, vhost: str
) -> None:
    password = f"Zq8{char}Xv{char}2Kw"
    parts = parse_url(for_kombu(template.format(pw=password)))
    assert parts["password"] == password
    assert (parts["hostname"], parts["port"], parts["virtual_host"]) == (host, port, vhost)


def test_an_encoded_password_and_a_url_without_one_are_left_as_they_are() -> None:
    encoded = f"redis://:{quote('a;b/c', safe='')}@h:6379/2"
    assert for_kombu(encoded) == encoded
    assert parse_url(for_kombu(encoded))["password"] == "a;b/c"
    assert for_kombu("redis://h:6379/0") == "redis://h:6379/0"
    assert for_kombu("redis+socket:///run/redis.sock?virtual_host=2").startswith("redis+socket:")


def test_sentinel_urls_stay_joined_with_each_password_encoded() -> None:
    url = for_kombu("sentinel://:a;b@s1:26379;sentinel://:a;b@s2:26379")
    first, second = url.split(";")
    assert parse_url(first)["password"] == parse_url(second)["password"] == "a;b"
    assert (parse_url(first)["hostname"], parse_url(second)["hostname"]) == ("s1", "s2")


@pytest.mark.parametrize("scheme", ["unix", "socket"])
def test_a_socket_form_kombu_cannot_read_is_refused_as_a_broker(scheme: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env(
            {"OOMCHECK_BROKER_URL": f"{scheme}://:hunter2@/run/redis.sock?db=1"},
            labels={"OOMCHECK_BROKER_URL": "--broker"},
        )
    message = str(info.value)
    assert message.startswith(f"--broker: {scheme}:// is not a broker URL")
    assert "redis+socket:///" in message
    assert "\n" not in message and "hunter2" not in message


@pytest.mark.parametrize("backend", ["unix:///run/redis.sock?db=1", "socket:///run/redis.sock"])
def test_a_result_backend_keeps_its_socket_forms(backend: str) -> None:
    settings = from_env(
        {
            "OOMCHECK_BROKER_URL": "redis+socket:///run/redis.sock?virtual_host=2",
            "OOMCHECK_RESULT_BACKEND": backend,
        }
    )
    assert settings.broker_transport == "redis" and settings.backend_is_redis


def test_remote_control_connects_to_the_settings_broker_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given the workers' env file loaded in the shell: Celery's own variables name other
    # brokers, and a config module that must not be imported
    (tmp_path / "hostile_config.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://other:6379/14")
    monkeypatch.setenv("CELERY_BROKER_READ_URL", "redis://other-read:6379/13")
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", "redis://other-write:6379/11")
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "hostile_config")
    monkeypatch.setenv("CELERY_LOADER", "default")
    # When the inspector builds its app for the settings' broker
    app = CeleryInspector("redis://:p;w/d@mine:6379/12").app
    # Then every way Celery opens a connection leads there, with the password whole
    connections = [
        app.connection_for_read(),
        app.connection_for_write(),
        app.connection(),
        app.broker_connection(),
        app.pool.acquire(block=False),
    ]
    for connection in connections:
        assert (connection.hostname, connection.port, connection.virtual_host) == (
            "mine",
            6379,
            "12",
        )
        assert connection.password == "p;w/d"
        connection.release()
    app.close()
