"""boto3 clients built one way: timeouts and retries sized from the run's budget, endpoints from
AWS_ENDPOINT_URL.

Endpoints are never a setting of ours: boto3 reads the standard ``AWS_ENDPOINT_URL`` (and the
per-service ``AWS_ENDPOINT_URL_<SERVICE>``) itself, which is how the demo and the tests reach moto.

Clients are built once per process, so their limits come from the budget of a whole run (the
Lambda's timeout, the CLI's --timeout); a run then starts a call only while its deadline still
allows that call's worst case (``CallLimits.worst_s``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from botocore.config import Config

# botocore's standard retry mode sleeps up to 2**(n-1) s (with jitter) before the n-th retry.
_BACKOFF_S = 1.0


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Per-call limits of one client: seconds to connect, seconds to wait for each read,
    attempts in all (1 = no retry)."""

    connect_s: float
    read_s: float
    attempts: int
    mode: Literal["standard", "adaptive"] = "standard"

    @property
    def worst_s(self) -> float:
        """The longest one call can take, retries and their back-off included."""
        backoff = sum(_BACKOFF_S * 2.0**i for i in range(self.attempts - 1))
        return self.attempts * (self.connect_s + self.read_s) + backoff

    def config(self) -> Config:
        from botocore.config import Config

        return Config(
            # botocore's "max_attempts" counts retries; "total_max_attempts" counts attempts
            retries={"mode": self.mode, "total_max_attempts": self.attempts},
            connect_timeout=self.connect_s,
            read_timeout=self.read_s,
            tcp_keepalive=True,
        )


def store_limits(budget_s: float) -> CallLimits:
    """DynamoDB: answers in milliseconds when healthy; one retry absorbs a throttle or a blip."""
    return CallLimits(_clamp(budget_s / 40, 0.2, 2.0), _clamp(budget_s / 20, 0.5, 5.0), 2)


def publish_limits(budget_s: float) -> CallLimits:
    """SNS Publish is not idempotent: a retry after a lost response sends the message again, so
    one retry at most (the outbox retries on the next run anyway)."""
    return CallLimits(_clamp(budget_s / 40, 0.2, 2.0), _clamp(budget_s / 15, 0.5, 5.0), 2)


def logs_limits(budget_s: float) -> CallLimits:
    """CloudWatch Logs: adaptive mode rate-limits the client itself after throttling, which is
    what FilterLogEvents' 5 TPS quota needs."""
    return CallLimits(
        _clamp(budget_s / 40, 0.2, 2.0), _clamp(budget_s / 10, 1.0, 10.0), 4, mode="adaptive"
    )


_DEFAULT_BUDGET_S = 30.0


def client(service: str, region: str | None = None, limits: CallLimits | None = None) -> Any:
    if limits is None:
        limits = {"dynamodb": store_limits, "sns": publish_limits, "logs": logs_limits}.get(
            service, logs_limits
        )(_DEFAULT_BUDGET_S)
    return session().client(service, region_name=region, config=limits.config())


_sessions: dict[tuple[tuple[str, str], ...], Any] = {}
_sessions_lock = threading.Lock()


def session() -> Any:
    """The process's boto3 session. One for every client: each session loads botocore's endpoint
    and service data again (~40 ms of CPU per client at a cold start, bench_cold). Keyed by the
    ``AWS_*`` environment it was made in, so a process that changes its credentials, region or
    endpoint (the tests, the demo) gets a session that sees the change."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _sessions_lock:  # boto3 sessions are not safe to create clients from concurrently
        found = _sessions.get(key)
        if found is None:
            import boto3

            found = _sessions[key] = boto3.session.Session()
        return _LockedSession(found)


class _LockedSession:
    """Client creation on a shared session, one thread at a time (the clients themselves are
    thread-safe)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def client(self, *args: Any, **kwargs: Any) -> Any:
        with _sessions_lock:
            return self._inner.client(*args, **kwargs)
