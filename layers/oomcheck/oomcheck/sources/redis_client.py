"""Redis clients built from the URLs Celery users already have, and URL redaction.

Accepted URL forms (the ones ``broker_url`` / ``result_backend`` use, plus cluster):

- ``redis://[[user]:password@]host[:port][/db]``
- ``rediss://...`` - TLS. ``ssl_cert_reqs`` (``required``/``optional``/``none`` or Celery's
  ``CERT_REQUIRED``/``CERT_OPTIONAL``/``CERT_NONE``), ``ssl_ca_certs``, ``ssl_certfile`` and
  ``ssl_keyfile`` are read from the query string, as Celery does. Unlike Celery's result backend,
  a missing ``ssl_cert_reqs`` means ``required``: the secure choice, not an error.
- ``sentinel://[:password@]host:26379[/db];sentinel://host2:26379`` - Celery's Sentinel form;
  ``master_name`` (required), ``sentinel_kwargs`` and ``min_other_sentinels`` come from
  ``transport_options``. The password in the URL is the master's, as in Celery.
- Redis Cluster: the scheme ``redis+cluster://`` (or ``rediss+cluster://`` for TLS), with one or
  more comma-separated startup nodes: ``redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000``.
  This is the only way to ask for a cluster client: a plain ``redis://`` URL that points at a
  cluster node gives a single-node client, which would only see that node's keys.

Nothing here prints or raises a password: every message carries :func:`redact`'s form of a URL.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from oomcheck.redact import redact

__all__ = ["RedisClient", "make_redis", "redact"]


RedisClient = redis.Redis | redis.RedisCluster

# A blackholed host must fail the run's source within seconds, whatever socket_timeout is.
MAX_CONNECT_TIMEOUT = 2.0

_SCHEMES = ("redis", "rediss", "sentinel", "redis+cluster", "rediss+cluster")
_SSL_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS: Mapping[str, ssl.VerifyMode] = {
    "required": ssl.CERT_REQUIRED,
    "cert_required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "cert_optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
    "cert_none": ssl.CERT_NONE,
}


@dataclass
class _Parsed:
    scheme: str
    hosts: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    db: int = 0
    query: dict[str, str] = field(default_factory=dict)


def _parse(url: str) -> _Parsed:
    """Split one URL chunk; errors name the redacted URL only."""
    safe = redact(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported Redis URL {safe!r}: expected one of "
            f"{', '.join(s + '://' for s in _SCHEMES)}"
        )
    rest = rest.split("#", 1)[0]
    rest, _, raw_query = rest.partition("?")
    at = rest.rfind("@")
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        if colon:
            username = unquote(user) or None
            password = unquote(pw) or None
        else:
            # kombu reads a lone userinfo as the password (redis://secret@host).
            password = unquote(user) or None
    netloc, _, path = hostpart.partition("/")
    db_text = path.strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"bad database number in Redis URL {safe!r}") from None
    default_port = 26379 if scheme == "sentinel" else 6379
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if item.strip():
            hosts.append(_host_port(item.strip(), default_port, safe))
    if not hosts:
        if scheme == "sentinel":
            raise ValueError(f"Sentinel URL {safe!r} names no host")
        hosts.append(("localhost", default_port))
    query: dict[str, str] = {}
    for name, values in parse_qs(raw_query, keep_blank_values=False).items():
        if values:
            query[name] = values[-1]
    if "virtual_host" in query:
        try:
            db = int(query.pop("virtual_host").strip("/") or 0)
        except ValueError:
            raise ValueError(f"bad virtual_host in Redis URL {safe!r}") from None
    if "db" in query:
        try:
            db = int(query.pop("db"))
        except ValueError:
            raise ValueError(f"bad db in Redis URL {safe!r}") from None
    return _Parsed(
        scheme=scheme, hosts=hosts, username=username, password=password, db=db, query=query
    )


def _host_port(item: str, default_port: int, safe: str) -> tuple[str, int]:
    if item.startswith("["):  # IPv6 literal
        close = item.find("]")
        if close < 0:
            raise ValueError(f"bad host in Redis URL {safe!r}")
        host, port_text = item[1:close], item[close + 1 :].lstrip(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"bad port in Redis URL {safe!r}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad host or port in Redis URL {safe!r}")
    return unquote(host), port


def _ssl_kwargs(
    query: Mapping[str, str], overrides: Mapping[str, Any] | None, safe: str
) -> dict[str, Any]:
    values: dict[str, Any] = {k: query[k] for k in _SSL_PARAMS if k in query}
    if overrides:
        values.update({k: v for k, v in overrides.items() if k in _SSL_PARAMS})
    reqs = values.get("ssl_cert_reqs", ssl.CERT_REQUIRED)
    if isinstance(reqs, str):
        key = reqs.strip().lower()
        if key not in _CERT_REQS:
            raise ValueError(
                f"bad ssl_cert_reqs {reqs!r} in {safe!r}: use required, optional or none"
            )
        reqs = _CERT_REQS[key]
    if not isinstance(reqs, ssl.VerifyMode):
        raise TypeError(f"bad ssl_cert_reqs in {safe!r}")
    values["ssl_cert_reqs"] = reqs
    if reqs == ssl.CERT_NONE:
        values["ssl_check_hostname"] = False
    return values


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
    unreachable server fails within a few seconds. No I/O happens here except for a cluster,
    whose slot map redis-py reads on construction.
    """
    options = dict(transport_options or {})
    safe = redact(url)
    connect_timeout = min(socket_timeout, MAX_CONNECT_TIMEOUT)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 1),
    }
    chunks = [c.strip() for c in url.split(";") if c.strip()]
    if not chunks:
        raise ValueError("empty Redis URL")
    first = _parse(chunks[0])

    if first.scheme == "sentinel":
        return _sentinel_client(chunks, options, common, ssl_options, safe)
    if len(chunks) > 1:
        raise ValueError(f"only sentinel:// URLs may be joined with ';': {safe!r}")

    tls = first.scheme.startswith("rediss") or bool(ssl_options)
    if not tls and any(k in first.query for k in _SSL_PARAMS):
        raise ValueError(f"TLS parameters in a non-TLS URL {safe!r}: use rediss://")
    if tls:
        common.update(_ssl_kwargs(first.query, ssl_options, safe))
        common["ssl"] = True
    auth: dict[str, Any] = {"username": first.username, "password": first.password}

    if first.scheme.endswith("+cluster"):
        if first.db != 0:
            raise ValueError(f"Redis Cluster has only database 0: {safe!r}")
        from redis.cluster import ClusterNode
        from redis.exceptions import RedisClusterException

        try:
            return redis.RedisCluster(
                startup_nodes=[
                    ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in first.hosts
                ],
                require_full_coverage=False,
                **auth,
                **common,
            )
        except (redis.RedisError, RedisClusterException) as exc:
            # redis-py's text names nodes and reasons, not credentials; redact() anyway, and
            # drop the chained exception, whose arguments may carry connection kwargs.
            raise redis.ConnectionError(
                f"cannot reach Redis Cluster {safe}: {redact(str(exc))[:300]}"
            ) from None
    if len(first.hosts) > 1:
        raise ValueError(f"several hosts need redis+cluster:// or sentinel://: {safe!r}")
    host, port = first.hosts[0]
    return redis.Redis(host=host, port=port, db=first.db, **auth, **common)


def _sentinel_client(
    chunks: list[str],
    options: Mapping[str, Any],
    common: dict[str, Any],
    ssl_options: Mapping[str, Any] | None,
    safe: str,
) -> redis.Redis:
    from redis.sentinel import Sentinel, SentinelManagedSSLConnection

    master_name = options.get("master_name")
    if not master_name:
        raise ValueError(f"a Sentinel URL needs transport option 'master_name': {safe!r}")
    parsed = [_parse(c) for c in chunks]
    if any(p.scheme != "sentinel" for p in parsed):
        raise ValueError(f"mixed schemes in a Sentinel URL {safe!r}")
    hosts = [hp for p in parsed for hp in p.hosts]
    first = parsed[0]
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel_kwargs.update(options.get("sentinel_kwargs") or {})
    master_kwargs = dict(common)
    if ssl_options:
        master_kwargs.update(_ssl_kwargs({}, ssl_options, safe))
        master_kwargs["connection_class"] = SentinelManagedSSLConnection
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        min_other_sentinels=int(options.get("min_other_sentinels", 0)),
        sentinel_kwargs=sentinel_kwargs,
        db=first.db,
        username=first.username,
        password=first.password,
        **master_kwargs,
    )
    client: redis.Redis = sentinel.master_for(str(master_name))  # type: ignore[no-untyped-call]
    return client
