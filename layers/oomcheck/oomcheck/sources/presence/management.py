"""RabbitMQ's management HTTP API: the workers' pidbox queues of the broker's vhost, in one GET.

AMQP cannot list queues, so on RabbitMQ a worker started since the last discovery is otherwise
unknown until the next one. Every Celery worker declares ``<nodename>.celery.pidbox`` (kombu's
``Mailbox.get_queue``; ``celery`` is Celery's default ``control_exchange``), exclusive to its
connection by default (``control_queue_exclusive``): RabbitMQ deletes it within a fraction of a
second of the worker's death, so an exclusive one names a worker alive now, whatever its
``consumers`` says: that is a statistic, collected every few seconds, and may still show the
instant between the queue's declare and its consume. A non-exclusive one
(``control_queue_exclusive=False``) outlives its worker until it expires: one that shows no
consumer is left out (a queue too new to have the statistic yet is listed). The checker's own
reply queues (``<uuid>.reply.celery.pidbox``) carry no ``@``, which every Celery nodename has, so
they never match.

One ``GET /api/queues/<vhost>?page=1&page_size=500&name=<regex>&use_regex=true&columns=...``
(pagination is what turns the server-side name filter on; 500 is the API's largest page), read
with urllib within a cap on time and on bytes. Whatever the reply holds is data from the network:
parsed by :func:`parse_page` (pure), where an entry that is not a pidbox queue is skipped and
counted, and a reply that is not a page (not JSON, too big, too deep) is a
:class:`ManagementError`, which fails the source for this run and nothing else.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from oomcheck import safejson
from oomcheck.config import urls
from oomcheck.model import PidboxNames
from oomcheck.redact import redact

PIDBOX_SUFFIX = ".celery.pidbox"
PAGE_SIZE = 500  # the management API refuses a larger page
# 500 entries of a 255-byte name and two small fields are ~150 kB; more is not a queue page
MAX_REPLY_BYTES = 512 * 1024
# The listing is asked on every check: a management API this slow is not answering. No read
# starts after it and each waits at most as long, so a GET ends within twice this.
API_S = 1.0
_CHUNK = 64 * 1024
_MAX_NAME = 255  # RabbitMQ's limit on a queue name
# the server-side filter (Erlang's re); parse_page checks every name again
_NAME_FILTER = r"@.*\.celery\.pidbox$"


class ManagementError(RuntimeError):
    """The management API did not give a queue page: the listing failed for this run."""


def _nodename(entry: object) -> tuple[str | None, bool]:
    """(the nodename of a live worker's pidbox queue, or None; whether the entry was malformed)."""
    if not isinstance(entry, dict):
        return None, True
    name = entry.get("name")
    consumers = entry.get("consumers")
    if not isinstance(name, str) or len(name) > _MAX_NAME or not name.endswith(PIDBOX_SUFFIX):
        return None, True
    node = name[: -len(PIDBOX_SUFFIX)]
    # control characters would reach reports and alert subjects; '@' is in every nodename
    if "@" not in node or node.startswith("@") or any(ord(c) < 0x20 for c in node):
        return None, True
    if entry.get("exclusive") is True or consumers is None:
        return node, False
    if isinstance(consumers, bool) or not isinstance(consumers, int) or consumers < 0:
        return None, True
    return (node if consumers > 0 else None), False


def parse_page(body: bytes) -> PidboxNames:
    """The management API's paginated queue listing -> the live workers' nodenames. Raises
    ManagementError when ``body`` is not a page (never quoting it: it is the network's)."""
    try:
        reply = safejson.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        why = "nests too deep" if isinstance(exc, safejson.TooDeep) else "is not JSON"
        raise ManagementError(f"the management API's reply {why}") from None
    items = reply.get("items") if isinstance(reply, dict) else None
    if not isinstance(items, list):
        raise ManagementError("the management API's reply is not a page of queues")
    names: set[str] = set()
    skipped = 0
    for entry in items[:PAGE_SIZE]:
        node, bad = _nodename(entry)
        skipped += bad
        if node is not None:
            names.add(node)
    skipped += max(0, len(items) - PAGE_SIZE)
    return PidboxNames(frozenset(names), skipped)


def _endpoint(base: str) -> str:
    """``base`` without its userinfo and trailing ``/`` or ``/api``: where ``/api/...`` goes."""
    scheme = base.partition("://")[0]
    rest = urls.userinfo_and_rest(base)[1].rstrip("/")
    rest = rest.removesuffix("/api")
    return f"{scheme}://{rest}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would send the Authorization header on to wherever a redirect points
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RabbitManagementApi:
    """The pidbox queues of one vhost, through the management plugin (a user with the
    ``monitoring`` tag, or ``management`` with access to the vhost)."""

    def __init__(
        self,
        base_url: str,
        vhost: str,
        user: str,
        password: str,
        *,
        timeout_s: float = API_S,
        opener: urllib.request.OpenerDirector | None = None,
        monotonic: Any = time.monotonic,
    ) -> None:
        if urls.scheme_of(base_url) not in ("http", "https"):
            # urllib would open file: and ftp: URLs too (config.parsers.http_url refuses them)
            raise ValueError("the management API's URL must be http(s)")
        query = urlencode(
            {
                "page": 1,
                "page_size": PAGE_SIZE,
                "name": _NAME_FILTER,
                "use_regex": "true",
                "columns": "name,exclusive,consumers",
            }
        )
        self.url = f"{_endpoint(base_url)}/api/queues/{quote(vhost, safe='')}?{query}"
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout_s = timeout_s
        self._opener = opener or urllib.request.build_opener(_NoRedirect)
        self._monotonic = monotonic
        self._where = redact(_endpoint(base_url))

    def describe(self) -> str:
        return f"rabbitmq management API {self._where}"

    def pidbox_queues(self) -> PidboxNames:
        """One GET: no read starts after ``timeout_s`` and each waits at most that long."""
        end = self._monotonic() + self.timeout_s
        # http(s) only: checked in __init__
        request = urllib.request.Request(self.url, headers=self._headers, method="GET")  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                body = self._read(reply, end)
        except urllib.error.HTTPError as exc:
            # 401: wrong credentials; 404: no such vhost (or no API under this path)
            raise ManagementError(f"the management API answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementError(f"the management API is unreachable: {reason}") from None
        return parse_page(body)

    def _read(self, reply: Any, end: float) -> bytes:
        """At most MAX_REPLY_BYTES, one socket read at a time (``read1``), so that a server
        dripping bytes cannot hold the check past ``end``."""
        chunks: list[bytes] = []
        size = 0
        while chunk := reply.read1(min(_CHUNK, MAX_REPLY_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise ManagementError(
                    f"the management API's reply is over {MAX_REPLY_BYTES // 1024} KiB"
                )
            if self._monotonic() > end:
                raise ManagementError(f"the management API's reply took over {self.timeout_s} s")
        return b"".join(chunks)


_KOMBU_DEFAULT_LOGIN = "guest"  # kombu's amqp transport logs in as guest/guest without userinfo


def api_credentials(
    api_url: str, broker_user: str | None, broker_password: str | None
) -> tuple[str, str]:
    """The API URL's own userinfo (percent-decoded) when it has one, else the broker's login."""
    user, password = urls.credentials(urls.userinfo_and_rest(api_url)[0])
    if user is not None or password is not None:
        return user or "", password or ""
    return broker_user or _KOMBU_DEFAULT_LOGIN, broker_password or _KOMBU_DEFAULT_LOGIN
