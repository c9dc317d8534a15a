"""RabbitMQ's management API listing of the workers' pidbox queues: the page parsed as data from
the network (malformed entries skipped and counted, a reply that is no page refused in one line),
the GET bounded in bytes and time, and its credentials and vhost taken as the workers' are."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
from typing import Any

import pytest

from oomcheck.config.settings import Settings, SettingsError, from_env
from oomcheck.model import PidboxNames
from oomcheck.sources.presence.brokers import AmqpBrokerPresence, PresenceOff
from oomcheck.sources.presence.management import (
    MAX_REPLY_BYTES,
    ManagementError,
    RabbitManagementApi,
    api_credentials,
    parse_page,
)
from oomcheck.wiring import build_deps


def _page(*items: object, **extra: object) -> bytes:
    return json.dumps({"items": list(items), "page": 1, "page_count": 1, **extra}).encode()


def q(name: str, consumers: object = 1, *, exclusive: bool = False) -> dict[str, object]:
    return {"name": name, "consumers": consumers, "exclusive": exclusive}


@pytest.mark.parametrize(
    ("body", "names", "skipped"),
    [
        pytest.param(
            _page(q("w1@ip-10-0-1-5.celery.pidbox"), q("w2@ip-10-0-1-6.celery.pidbox", 2)),
            {"w1@ip-10-0-1-5", "w2@ip-10-0-1-6"},
            0,
            id="live-workers",
        ),
        pytest.param(
            _page(q("fresh@h.celery.pidbox", None), {"name": "new@h.celery.pidbox"}),
            {"fresh@h", "new@h"},
            0,
            id="too-new-for-the-statistics-is-listed",
        ),
        pytest.param(
            _page(q("gone@h.celery.pidbox", 0), q("w@h.celery.pidbox")),
            {"w@h"},
            0,
            id="a-consumerless-queue-is-a-dead-workers-leftover",
        ),
        pytest.param(
            _page(q("w@h.celery.pidbox", 0, exclusive=True)),
            {"w@h"},
            0,
            id="an-exclusive-queue-lives-with-its-worker-whatever-its-statistic-says",
        ),
        pytest.param(
            _page(q("7c1e8a9e-0b4f-3f5e-9c7d-1a2b3c4d5e6f.reply.celery.pidbox")),
            set(),
            1,
            id="the-checkers-own-reply-queue-is-not-a-worker",
        ),
        pytest.param(
            _page(
                "w@h.celery.pidbox",
                None,
                [1],
                {"name": 5},
                q("celery"),
                q("@h.celery.pidbox"),
                q("w@h\n.celery.pidbox"),
                q("x" * 250 + "@h.celery.pidbox"),
                q("w@h.celery.pidbox", "1"),
                q("w@h.celery.pidbox", True),
                q("w@h.celery.pidbox", -1),
                q("ok@h.celery.pidbox"),
            ),
            {"ok@h"},
            11,
            id="malformed-entries-skipped-and-counted",
        ),
    ],
)
def test_the_page_names_the_live_workers(body: bytes, names: set[str], skipped: int) -> None:
    assert parse_page(body) == PidboxNames(frozenset(names), skipped)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        pytest.param(b"<html>login</html>", "is not JSON", id="html"),
        pytest.param(b"\xff\xfe{", "is not JSON", id="not-utf8"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "nests too deep", id="nested"),
        pytest.param(b'{"error": "Object Not Found"}', "not a page of queues", id="error-object"),
        pytest.param(b'[{"name": "w@h.celery.pidbox"}]', "not a page of queues", id="a-list"),
        pytest.param(b'{"items": "w@h"}', "not a page of queues", id="items-not-a-list"),
    ],
)
def test_a_reply_that_is_not_a_page_is_refused_in_one_line(body: bytes, why: str) -> None:
    with pytest.raises(ManagementError) as caught:
        parse_page(body)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "login" not in str(caught.value)  # the network's bytes are never quoted


class _Reply:
    """An HTTP response as urllib hands it over: read1 gives at most ``step`` bytes a call."""

    def __init__(self, body: bytes, step: int = 1 << 20, tick: Any = None) -> None:
        self.body = io.BytesIO(body)
        self.step = step
        self.tick = tick

    def read1(self, n: int) -> bytes:
        if self.tick is not None:
            self.tick()
        return self.body.read(min(n, self.step))

    def __enter__(self) -> _Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Opener:
    def __init__(self, reply: _Reply | Exception) -> None:
        self.reply = reply
        self.requests: list[Any] = []

    def open(self, request: Any, timeout: float) -> _Reply:
        self.requests.append((request, timeout))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def _api(reply: _Reply | Exception, **kwargs: Any) -> tuple[RabbitManagementApi, _Opener]:
    opener = _Opener(reply)
    api = RabbitManagementApi(
        "https://mon:p%40ss@b-1.mq.eu-west-1.amazonaws.com/",
        "prod/eu",
        "mon",
        "p@ss",
        opener=opener,  # type: ignore[arg-type]
        **kwargs,
    )
    return api, opener


def test_one_get_of_the_vhosts_pidbox_queues_with_basic_auth() -> None:
    api, opener = _api(_Reply(_page(q("w@h.celery.pidbox"))))
    assert api.pidbox_queues() == PidboxNames(frozenset({"w@h"}))
    [(request, timeout)] = opener.requests
    assert request.full_url.startswith(
        "https://b-1.mq.eu-west-1.amazonaws.com/api/queues/prod%2Feu?page=1&page_size=500&"
    )
    assert "use_regex=true" in request.full_url
    assert "columns=name%2Cexclusive%2Cconsumers" in request.full_url
    assert "p%40ss" not in request.full_url and "mon" not in request.full_url
    token = request.get_header("Authorization").removeprefix("Basic ")
    assert base64.b64decode(token) == b"mon:p@ss"
    assert timeout == api.timeout_s
    assert "p@ss" not in api.describe() and "p%40ss" not in api.describe()


def test_a_huge_reply_is_refused_without_reading_it_whole() -> None:
    reads: list[int] = []
    reply = _Reply(b"[" + b" " * (4 * MAX_REPLY_BYTES), step=64 * 1024)
    reply.tick = lambda: reads.append(1)
    api, _ = _api(reply)
    with pytest.raises(ManagementError, match="over 512 KiB"):
        api.pidbox_queues()
    assert len(reads) <= MAX_REPLY_BYTES // (64 * 1024) + 1


def test_a_dripping_reply_ends_at_the_time_cap() -> None:
    # Given a server that sends one byte a read, each read taking 0.3 s of a fake clock
    clock = [0.0]

    def tick() -> None:
        clock[0] += 0.3

    api, _ = _api(_Reply(_page(q("w@h.celery.pidbox")), step=1, tick=tick), timeout_s=1.0)
    api._monotonic = lambda: clock[0]
    # Then the GET is given up once the cap has passed, not after every byte
    with pytest.raises(ManagementError, match=r"took over 1\.0 s"):
        api.pidbox_queues()
    assert clock[0] <= 1.0 + 0.3 * 2


@pytest.mark.parametrize(
    ("error", "why"),
    [
        pytest.param(
            urllib.error.HTTPError("u", 401, "Unauthorized", {}, None),  # type: ignore[arg-type]
            "answered HTTP 401",
            id="401",
        ),
        pytest.param(
            urllib.error.HTTPError("u", 301, "Moved", {}, None),  # type: ignore[arg-type]
            "answered HTTP 301",
            id="a-redirect-is-not-followed",
        ),
        pytest.param(urllib.error.URLError("timed out"), "unreachable: timed out", id="timeout"),
        pytest.param(ConnectionResetError("reset"), "unreachable: reset", id="reset"),
    ],
)
def test_http_failures_are_one_line(error: Exception, why: str) -> None:
    api, _ = _api(error)
    with pytest.raises(ManagementError, match=why):
        api.pidbox_queues()


def test_only_http_urls_are_opened() -> None:
    with pytest.raises(ValueError, match="http"):
        RabbitManagementApi("file:///etc/passwd", "/", "u", "p")


@pytest.mark.parametrize(
    ("api_url", "broker", "login"),
    [
        pytest.param("http://h:15672", ("bob", "b0b;pw"), ("bob", "b0b;pw"), id="the-brokers"),
        pytest.param("http://mon:m%3Apw@h:15672", ("bob", "x"), ("mon", "m:pw"), id="its-own"),
        pytest.param("http://h:15672", (None, None), ("guest", "guest"), id="kombus-default"),
    ],
)
def test_credentials(
    api_url: str, broker: tuple[str | None, str | None], login: tuple[str, str]
) -> None:
    assert api_credentials(api_url, *broker) == login


def test_wiring_takes_the_workers_vhost_and_login_from_the_broker_url() -> None:
    settings = Settings(
        broker_url="amqp://app:s3cr%2Ft@mq.internal:5672/prod",
        rabbitmq_api_url="http://mq.internal:15672/",
        state_file="/nonexistent/state.json",
    )
    presence = build_deps(settings).presence
    assert isinstance(presence, AmqpBrokerPresence)
    listing = presence.listing
    assert listing is not None
    assert listing.url.startswith("http://mq.internal:15672/api/queues/prod?")
    token = listing._headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(token) == b"app:s3cr/t"


def test_without_the_api_rabbitmq_cannot_list_its_workers() -> None:
    presence = AmqpBrokerPresence(connection=None, now=lambda: 0.0)
    with pytest.raises(PresenceOff, match="OOMCHECK_RABBITMQ_API_URL"):
        presence.pidbox_names()
    assert presence.subscriptions() is None


def test_the_setting() -> None:
    env = {
        "OOMCHECK_BROKER_URL": "amqp://app:pw@mq:5672//",
        "OOMCHECK_RABBITMQ_API_URL": "https://mon:api-s3cret@mq:15671",
    }
    settings = from_env(env)
    assert settings.rabbitmq_api_url == "https://mon:api-s3cret@mq:15671"
    assert "api-s3cret" in settings.secrets()
    for bad in ("file:///etc/passwd", "mq:15672", "http://", "ftp://mq/"):
        with pytest.raises(SettingsError, match="OOMCHECK_RABBITMQ_API_URL must be an http"):
            from_env({**env, "OOMCHECK_RABBITMQ_API_URL": bad})
    with pytest.raises(SettingsError, match="only with a RabbitMQ broker"):
        from_env({**env, "OOMCHECK_BROKER_URL": "redis://127.0.0.1:6379/0"})
    with pytest.raises(SettingsError) as caught:
        from_env({**env, "OOMCHECK_RABBITMQ_API_URL": "gopher://mon:api-s3cret@mq"})
    assert "api-s3cret" not in str(caught.value)


def test_with_the_api_watch_mode_sees_a_workers_queue_go() -> None:
    # Given the listing before and after a worker's death (its exclusive queue deleted)
    pages = iter(
        [_page(q("a@h.celery.pidbox"), q("b@h.celery.pidbox")), _page(q("a@h.celery.pidbox"))]
    )

    class Listing:
        def pidbox_queues(self) -> PidboxNames:
            return parse_page(next(pages))

    presence = AmqpBrokerPresence(None, lambda: 0.0, Listing())  # type: ignore[arg-type]
    before, after = presence.subscriptions(), presence.subscriptions()
    # Then the subscriptions watch mode compares lose the dead worker's
    assert before is not None and after is not None
    assert before - after == {"b@h"}
