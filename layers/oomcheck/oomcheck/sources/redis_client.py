"""Redis clients built from the URLs Celery users already have, and the server's clock.

Accepted URL forms (the ones ``broker_url`` / ``result_backend`` use, plus cluster):

- ``redis://[[user]:password@]host[:port][/db]``
- ``rediss://...`` - TLS. ``ssl_cert_reqs`` (``required``/``optional``/``none`` or Celery's
  ``CERT_REQUIRED``/``CERT_OPTIONAL``/``CERT_NONE``), ``ssl_ca_certs``, ``ssl_certfile`` and
  ``ssl_keyfile`` are read from the query string, as Celery does. Unlike Celery's result backend,
  a missing ``ssl_cert_reqs`` means ``required``: the secure choice, not an error.
- ``unix:///path/to/redis.sock?db=0`` (redis-py), ``redis+socket:///path`` (kombu) or
  ``socket:///path`` (Celery's backend): a Unix socket; ``db`` or ``virtual_host`` in the query.
- ``sentinel://[:password@]host:26379[/db];sentinel://host2:26379`` - Celery's Sentinel form;
  ``master_name`` (required), ``sentinel_kwargs`` and ``min_other_sentinels`` come from
  ``transport_options``. The password in the URL is the master's, as in Celery.
- Redis Cluster: the scheme ``redis+cluster://`` (or ``rediss+cluster://`` for TLS), with one or
  more comma-separated startup nodes: ``redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000``.
  This is the only way to ask for a cluster client: a plain ``redis://`` URL that points at a
  cluster node gives a single-node client, which would only see that node's keys.

A password may hold any character, encoded or not (see :mod:`oomcheck.config.urls`). No error raised
here quotes the URL: messages say what is wrong and the form expected, so a password that a typo
pushed into the host or the path cannot leak through them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from oomcheck.config.urls import credentials, scheme_of, split_urls, userinfo_and_rest
from oomcheck.redact import redact, scrub
from oomcheck.sources.presence.owners import OWN_NAME

__all__ = ["RedisClient", "RedisClock", "check_url", "make_redis", "redact", "server_time"]


RedisClient = redis.Redis | redis.RedisCluster

# A blackholed host must fail the run's source within seconds, whatever socket_timeout is.
MAX_CONNECT_TIMEOUT = 2.0

_HOST_SCHEMES = ("redis", "rediss", "sentinel", "redis+cluster", "rediss+cluster")
_SOCKET_SCHEMES = ("unix", "redis+socket", "socket")
SCHEMES = _HOST_SCHEMES + _SOCKET_SCHEMES
_SSL_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS: Mapping[str, ssl.VerifyMode] = {
    "required": ssl.CERT_REQUIRED,
    "cert_required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "cert_optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
    "cert_none": ssl.CERT_NONE,
}
_FORM = "redis://[:password@]host[:port][/db]"


@dataclass
class _Parsed:
    scheme: str
    hosts: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    db: int = 0
    query: dict[str, str] = field(default_factory=dict)
    socket_path: str | None = None


def _parse(url: str) -> _Parsed:
    """Split one URL (no ';'); a ValueError says what is wrong without quoting the URL."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme://"
        wanted = ", ".join(s + "://" for s in SCHEMES)
        raise ValueError(f"unsupported Redis URL ({shown}): expected one of {wanted}")
    userinfo, rest = userinfo_and_rest(url)
    username, password = credentials(userinfo)
    rest = rest.split("#", 1)[0]
    rest, _, raw_query = rest.partition("?")
    query: dict[str, str] = {}
    for name, values in parse_qs(raw_query, keep_blank_values=False).items():
        if values:
            query[name] = values[-1]
    if password is None and "password" in query:
        password = query.pop("password")  # redis-py's unix://...?password= form
    parsed = _Parsed(scheme=scheme, hosts=[], username=username, password=password, query=query)
    if scheme in _SOCKET_SCHEMES:
        path = unquote(rest)
        if not path.startswith("/"):
            raise ValueError(f"a socket URL needs an absolute path: {scheme}:///path/to/redis.sock")
        parsed.socket_path = path
    else:
        netloc, _, path = rest.partition("/")
        parsed.db = _db(path.strip("/") or "0", "the database after the host")
        parsed.hosts = _hosts(netloc, 26379 if scheme == "sentinel" else 6379, scheme)
    if "virtual_host" in query:
        parsed.db = _db(query.pop("virtual_host").strip("/") or "0", "virtual_host")
    if "db" in query:
        parsed.db = _db(query.pop("db"), "db")
    return parsed


def _db(text: str, what: str) -> int:
    if not text.isdecimal():
        raise ValueError(f"{what} must be a number (0, 1, ...), as in {_FORM}")
    return int(text)


def _hosts(netloc: str, default_port: int, scheme: str) -> list[tuple[str, int]]:
    hosts = [_host_port(item.strip(), default_port) for item in netloc.split(",") if item.strip()]
    if hosts:
        return hosts
    if scheme == "sentinel":
        raise ValueError("a Sentinel URL names no host: sentinel://host:26379;sentinel://...")
    return [("localhost", default_port)]


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # IPv6 literal
        close = item.find("]")
        if close < 0:
            raise ValueError("an IPv6 host needs its closing ']': redis://[::1]:6379/0")
        host, port_text = item[1:close], item[close + 1 :].lstrip(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not port_text:
        port = default_port
    elif port_text.isdecimal() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(
            f"the port must be a number from 1 to 65535, as in {_FORM} "
            "(a password with reserved characters may be percent-encoded)"
        )
    if not host:
        raise ValueError(f"the URL names no host, as in {_FORM}")
    return unquote(host), port


def _ssl_kwargs(query: Mapping[str, str], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {k: query[k] for k in _SSL_PARAMS if k in query}
    if overrides:
        values.update({k: v for k, v in overrides.items() if k in _SSL_PARAMS})
    reqs = values.get("ssl_cert_reqs", ssl.CERT_REQUIRED)
    if isinstance(reqs, str):
        key = reqs.strip().lower()
        if key not in _CERT_REQS:
            raise ValueError("ssl_cert_reqs must be required, optional or none")
        reqs = _CERT_REQS[key]
    if reqs not in _CERT_REQS.values():
        raise ValueError("ssl_cert_reqs must be required, optional or none")
    values["ssl_cert_reqs"] = reqs
    if reqs == ssl.CERT_NONE:
        values["ssl_check_hostname"] = False
    return values


@dataclass
class _Plan:
    """What client a URL asks for, decided without I/O: check_url and make_redis share it."""

    kind: Literal["single", "cluster", "sentinel"]
    urls: list[_Parsed]
    kwargs: dict[str, Any]
    master_name: str = ""


def _plan(
    url: str,
    options: Mapping[str, Any],
    socket_timeout: float,
    ssl_options: Mapping[str, Any] | None,
) -> _Plan:
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, MAX_CONNECT_TIMEOUT),
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 1),
        # Every connection of the checker's is named, so that broker presence never counts one
        # as a worker's (and an operator's CLIENT LIST shows whose it is).
        "client_name": OWN_NAME,
    }
    chunks = split_urls(url)
    if not chunks:
        raise ValueError(f"empty Redis URL: expected {_FORM}")
    parsed = [_parse(c) for c in chunks]
    first = parsed[0]
    if first.scheme == "sentinel":
        return _sentinel_plan(parsed, options, common, ssl_options)
    if len(parsed) > 1:
        raise ValueError("only sentinel:// URLs may be joined with ';'")
    tls = first.scheme.startswith("rediss") or bool(ssl_options)
    if not tls and any(k in first.query for k in _SSL_PARAMS):
        raise ValueError("TLS parameters in a non-TLS URL: use rediss://")
    if tls and first.socket_path is None:
        common.update(_ssl_kwargs(first.query, ssl_options))
        common["ssl"] = True
    common.update(username=first.username, password=first.password)
    if first.scheme.endswith("+cluster"):
        if first.db != 0:
            raise ValueError("Redis Cluster has only database 0")
        return _Plan("cluster", parsed, common)
    if len(first.hosts) > 1:
        raise ValueError("several hosts need redis+cluster:// or sentinel://")
    return _Plan("single", parsed, common)


def _sentinel_plan(
    parsed: list[_Parsed],
    options: Mapping[str, Any],
    common: dict[str, Any],
    ssl_options: Mapping[str, Any] | None,
) -> _Plan:
    master_name = options.get("master_name")
    if not master_name:
        raise ValueError("a Sentinel URL needs the transport option 'master_name'")
    if any(p.scheme != "sentinel" for p in parsed):
        raise ValueError("a Sentinel URL joins only sentinel:// URLs with ';'")
    if options.get("sentinel_kwargs") and not hasattr(options["sentinel_kwargs"], "items"):
        raise ValueError("the transport option 'sentinel_kwargs' must be an object")
    if ssl_options:
        common.update(_ssl_kwargs({}, ssl_options))
    common.update(username=parsed[0].username, password=parsed[0].password, db=parsed[0].db)
    return _Plan("sentinel", parsed, common, master_name=str(master_name))


def check_url(
    url: str,
    *,
    transport_options: Mapping[str, Any] | None = None,
    ssl_options: Mapping[str, Any] | None = None,
) -> None:
    """Raise ValueError (never quoting the URL) if :func:`make_redis` would refuse ``url``."""
    _plan(url, transport_options or {}, 5.0, ssl_options)


def make_redis(
    url: str,
    *,
    transport_options: Mapping[str, Any] | None = None,
    socket_timeout: float = 5.0,
    ssl_options: Mapping[str, Any] | None = None,
) -> redis.Redis | redis.RedisCluster:
    """A client for ``url`` (see the module docstring for the forms), with short timeouts.

    ``transport_options`` is Celery's ``broker_transport_options`` /
    ``result_backend_transport_options`` (only the Sentinel keys matter here; ``global_keyprefix``
    is the scanners' business). ``ssl_options`` is Celery's ``broker_use_ssl`` /
    ``redis_backend_use_ssl`` dict; it turns TLS on for a ``redis://`` URL as Celery does.

    Connecting takes at most ``min(socket_timeout, 2 s)`` per attempt and is retried once, so an
    unreachable server fails within a few seconds. No I/O happens here, for any form: a server
    that cannot be reached fails its first command, inside the run, like any other source.
    """
    plan = _plan(url, transport_options or {}, socket_timeout, ssl_options)
    if plan.kind == "sentinel":
        return _sentinel_client(plan, transport_options or {}, bool(ssl_options))
    first = plan.urls[0]
    if plan.kind == "cluster":
        return _DeferredCluster(first.hosts, plan.kwargs)
    if first.socket_path is not None:
        return redis.Redis(unix_socket_path=first.socket_path, db=first.db, **plan.kwargs)
    host, port = first.hosts[0]
    return redis.Redis(host=host, port=port, db=first.db, **plan.kwargs)


def _sentinel_client(plan: _Plan, options: Mapping[str, Any], tls: bool) -> redis.Redis:
    from redis.sentinel import Sentinel, SentinelManagedSSLConnection

    master_kwargs = dict(plan.kwargs)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": master_kwargs["socket_timeout"],
        "socket_connect_timeout": master_kwargs["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel_kwargs.update(options.get("sentinel_kwargs") or {})
    if tls:
        master_kwargs["connection_class"] = SentinelManagedSSLConnection
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [hp for p in plan.urls for hp in p.hosts],
        min_other_sentinels=int(options.get("min_other_sentinels", 0)),
        sentinel_kwargs=sentinel_kwargs,
        **master_kwargs,
    )
    client: redis.Redis = sentinel.master_for(plan.master_name)  # type: ignore[no-untyped-call]
    return client


class _DeferredCluster(redis.RedisCluster):
    """A RedisCluster that reads the slot map on first use instead of in its constructor.

    redis-py's cluster client connects while it is built, so an unreachable cluster would fail
    wherever the client is made (before any run, with no report) while a plain Redis fails its
    first command inside the run. Deferring makes both fail the same way, and a container built
    while the cluster was down recovers on a later run instead of keeping a broken client.
    """

    def __init__(self, hosts: list[tuple[str, int]], kwargs: dict[str, Any]) -> None:
        # redis.RedisCluster.__init__ runs on first attribute it would have set (see __getattr__)
        self.__dict__["_deferred"] = (hosts, kwargs)

    def __getattr__(self, name: str) -> Any:
        deferred = self.__dict__.get("_deferred")
        if name.startswith("__") or deferred is None or self.__dict__.get("_connecting"):
            raise AttributeError(name)
        self._connect(*deferred)
        return object.__getattribute__(self, name)

    def _connect(self, hosts: list[tuple[str, int]], kwargs: dict[str, Any]) -> None:
        from redis.cluster import ClusterNode
        from redis.exceptions import RedisClusterException

        self.__dict__["_connecting"] = True
        try:
            redis.RedisCluster.__init__(
                self,
                startup_nodes=[ClusterNode(h, p) for h, p in hosts],  # type: ignore[no-untyped-call]
                require_full_coverage=False,
                **kwargs,
            )
        except (redis.RedisError, RedisClusterException) as exc:
            nodes = ",".join(f"{h}:{p}" for h, p in hosts)
            # redis-py's text names nodes and reasons; the chained exception is dropped because
            # its arguments may carry connection kwargs (the password among them).
            reason = scrub(str(exc), [kwargs.get("password") or ""])[:300]
            raise redis.ConnectionError(f"cannot reach Redis Cluster {nodes}: {reason}") from None
        finally:
            self.__dict__["_connecting"] = False
        self.__dict__["_deferred"] = None

    def close(self) -> None:
        if self.__dict__.get("_deferred") is None:
            super().close()


def server_time(client: redis.Redis | redis.RedisCluster) -> float:
    """The server's clock (Redis ``TIME``), POSIX seconds."""
    reply: Any = client.time()
    if isinstance(reply, Mapping):  # a cluster may answer per node: any one will do
        reply = next(iter(reply.values()))
    seconds, micros = reply
    return float(seconds) + float(micros) / 1_000_000


class RedisClock:
    """A Redis server's clock as the run's reference (see :mod:`oomcheck.observe`): one ``TIME``
    per call. ``name`` says whose clock it is, for the report's note when it does not answer."""

    def __init__(self, client: redis.Redis | redis.RedisCluster, name: str) -> None:
        self._client = client
        self.name = name

    def __call__(self) -> float:
        return server_time(self._client)
