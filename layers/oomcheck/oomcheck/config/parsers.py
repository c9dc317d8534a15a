"""Parsers of settings: text in, value out; a ValueError says what the variable wants (the
caller names the variable). Never quote a URL in a message: it may hold a password."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from oomcheck.config import urls
from oomcheck.model import QuorumLimit

Parser = Callable[[str], Any]
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
YEARS_10 = 3650 * DAY


def seconds(low: float, high: float, *, above: bool = False, zero_is_none: bool = False) -> Parser:
    """A finite number of seconds in [low, high] ((low, high] with ``above``); with
    ``zero_is_none``, 0 means "none" (no TTL) and gives None."""
    floor = f"more than {_num(low)}" if above else f"at least {_num(low)}"

    def parse(raw: str) -> float | None:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if zero_is_none and value == 0:
            return None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise ValueError(
                f"must be a number of seconds, {floor} and at most {_num(high)}, not {raw[:40]!r}"
            )
        return value

    return parse


_SPAN_UNITS = {"s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}


def span(raw: str) -> float:
    """A span of time: seconds, or a number with a unit (``90m``, ``24h``, ``7d``, ``2w``), more
    than 0 and at most a year."""
    text = raw.strip().lower()
    unit = _SPAN_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 366 * DAY:
        raise ValueError(
            f"must be a span such as 7d, 24h, 90m or seconds (at most a year), not {raw[:40]!r}"
        )
    return value


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def count(low: int, high: int) -> Parser:
    def parse(raw: str) -> int:
        text = raw.strip()
        if not text.lstrip("-").isdecimal() or not low <= int(text) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {raw[:40]!r}")
        return int(text)

    return parse


def text(raw: str) -> str:
    return raw.strip()


def names(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON object: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise ValueError("must be a JSON object, not nested this deep") from None
    if isinstance(value, dict):
        return value
    raise ValueError('must be a JSON object, e.g. {"app.tasks.report": 600}')


def _no_constant(name: str) -> float:
    raise ValueError(f"must be plain JSON: {name} is not a number")


TASK_LIMIT = seconds(0, 30 * DAY, above=True)


def task_limits(raw: str) -> dict[str, float]:
    limits: dict[str, float] = {}
    for task, value in json_object(raw).items():
        # JSON true is an int to Python, and an error here
        text = repr(value) if type(value) in (int, float) else "not a number"
        try:
            limits[str(task)] = float(TASK_LIMIT(text))
        except ValueError as exc:
            raise ValueError(f"[{task[:80]!r}] {exc}") from None
    return limits


def acks_late(raw: str) -> dict[str, bool]:
    """``{"task.name": true, "*": false}``: each task's acks_late (``*``: every other task)."""
    modes: dict[str, bool] = {}
    for task, value in json_object(raw).items():
        if value is not True and value is not False:
            raise ValueError(f"[{str(task)[:80]!r}] must be true or false")
        modes[str(task)] = bool(value)
    return modes


def quorum_queues(raw: str) -> dict[str, QuorumLimit]:
    """``{"queue": {"delivery_limit": 20, "dead_letter_exchange": "dlx",
    "dead_letter_routing_key": "dead"}}``: RabbitMQ quorum queues with a delivery limit (the
    queue arguments x-delivery-limit, x-dead-letter-exchange, x-dead-letter-routing-key)."""
    out: dict[str, QuorumLimit] = {}
    for queue, value in json_object(raw).items():
        where = f"[{str(queue)[:80]!r}]"
        spec = value if isinstance(value, dict) else {}
        limit = spec.get("delivery_limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"{where}.delivery_limit must be a whole number, 0 or more")
        exchange, key = spec.get("dead_letter_exchange"), spec.get("dead_letter_routing_key")
        if not all(v is None or isinstance(v, str) for v in (exchange, key)):
            raise ValueError(f"{where}: the dead-letter exchange and routing key must be text")
        out[str(queue)] = QuorumLimit(limit, exchange or None, key)
    return out


def task_queues(raw: str) -> dict[str, str]:
    """``{"app.tasks.report": "reports", "*": "celery"}``: each task's queue (``*``: the default
    queue, where every other task goes)."""
    out: dict[str, str] = {}
    for task, queue in json_object(raw).items():
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"[{str(task)[:80]!r}] must be a queue name")
        out[str(task)] = queue
    return out


def ecs_services(raw: str) -> tuple[str, ...]:
    """``cluster/service,cluster/service``: the ECS services that run workers."""
    found = names(raw)
    for name in found:
        cluster, sep, service = name.partition("/")
        if not sep or not cluster or not service or "/" in service:
            raise ValueError(f"{name[:80]!r} must be cluster/service")
    return found


def share(raw: str) -> float:
    """A share of a memory limit: 0.5-1.0, or a percent 50-100 (``90`` or ``90%``). A number
    above 1 is a percent, so ``5`` is 5 % and refused rather than read as 0.5."""
    text = raw.strip()
    percent = text.endswith("%")
    try:
        value = float(text.removesuffix("%").strip())
    except ValueError:
        value = math.nan
    if percent or value > 1:
        value /= 100
    if not math.isfinite(value) or not 0.5 <= value <= 1.0:
        raise ValueError(
            "must be a share of the limit from 0.5 to 1.0, or a percent from 50 to 100 "
            f"(0.9 or 90%), not {raw[:40]!r}"
        )
    return value


def name_set(raw: str) -> frozenset[str]:
    return frozenset(names(raw))


def string_map(raw: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in json_object(raw).items()}


def url(raw: str) -> str:
    """Structure only; the Redis forms are checked in full (with their transport options) once
    every variable is read. Never quotes ``raw``."""
    value = raw.strip()
    if urls.scheme_of(value) is None:
        raise ValueError("must be a URL such as redis://host:6379/0 or amqp://host:5672//")
    return value


def http_url(raw: str) -> str:
    """An http(s) URL with a host: the only schemes a management API is read over (urllib would
    also open ``file:`` and ``ftp:``). Never quotes ``raw``."""
    value = raw.strip()
    scheme = urls.scheme_of(value)
    host = urls.userinfo_and_rest(value)[1].partition("/")[0] if scheme else ""
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise ValueError(
            "must be an http(s) URL such as http://rabbitmq.internal:15672 or "
            "https://b-1234.mq.eu-west-1.amazonaws.com"
        )
    return value
