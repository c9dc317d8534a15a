"""Settings from a Celery app's own configuration (``oomcheck -A proj.celery``), and where each
setting the report shows came from.

Precedence, highest first: a flag, an ``OOMCHECK_*`` variable, Celery's ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND`` (the workers themselves let those beat the app's configuration), the
app's ``app.conf``, oomcheck's default. The app's values go through the same parsers as the
variables (:func:`oomcheck.config.settings.from_env`): a bad one is a one-line error naming the
Celery setting, never quoting a URL.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from oomcheck.config.settings import VARIABLES, Settings, SettingsError
from oomcheck.redact import redact
from oomcheck.report.document import SettingOrigin

# OOMCHECK_* variable -> the Celery setting it mirrors (named in messages and in the report)
CELERY_NAMES: Mapping[str, str] = {
    "OOMCHECK_BROKER_URL": "broker_url",
    "OOMCHECK_RESULT_BACKEND": "result_backend",
    "OOMCHECK_RESULT_EXPIRES": "result_expires",
    "OOMCHECK_RESULT_FAILURE_EXPIRES": "result_failure_expires",
    "OOMCHECK_BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "OOMCHECK_RESULT_TRANSPORT_OPTIONS": "result_backend_transport_options",
    "OOMCHECK_APP_NAME": "main",
    "OOMCHECK_BEAT_SCHEDULER": "beat_scheduler",
    "OOMCHECK_REDBEAT_REDIS_URL": "redbeat_redis_url",
    "OOMCHECK_REDBEAT_KEY_PREFIX": "redbeat_key_prefix",
    "OOMCHECK_REDBEAT_LOCK_KEY": "redbeat_lock_key",
}
_FALLBACKS = {v.name: v.fallback for v in VARIABLES}


class AppError(SettingsError):
    """The Celery app named by ``-A`` cannot be imported or is not a Celery app (one line)."""


def load_app(spec: str) -> Any:
    """The Celery app named as ``celery -A`` names it: ``proj``, ``proj.celery``,
    ``proj.celery:app``, or a package whose ``celery`` module holds the app (Celery's own
    ``find_app``). The working directory is importable, as under ``python -m celery``, and stays
    so: an app may import its settings module lazily, when ``app.conf`` is first read."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from celery import Celery
    from celery.app.utils import find_app

    try:
        app = find_app(spec)
        if isinstance(app, Celery):
            app.conf.get("broker_url")  # loads a lazy config_from_object now, inside this try
    except ModuleNotFoundError as exc:
        module, _, attribute = spec.partition(":")
        if attribute and exc.name == spec:  # find_app's retry of "module:attr" as a module
            raise AppError(f"-A {spec}: {module} has no attribute {attribute!r}") from None
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise AppError(
                f"-A {spec}: no module named {exc.name!r} in {cwd} or on PYTHONPATH"
            ) from None
        raise AppError(_import_failed(spec, exc)) from None
    except AttributeError as exc:
        hidden = _celery_module_error(spec)
        if hidden is not None:
            raise AppError(_import_failed(spec, hidden)) from None
        raise AppError(f"-A {spec}: no Celery app there ({_line(exc)})") from None
    # the app's own import code: anything can happen there, and it is one line here
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise AppError(_import_failed(spec, exc)) from None
    if not isinstance(app, Celery):
        raise AppError(f"-A {spec}: not a Celery app (found {type(app).__name__})")
    return app


def _celery_module_error(spec: str) -> BaseException | None:
    """Why ``<spec>.celery`` fails to import, when ``spec`` is a package that has one.

    Celery's ``find_app`` tries a package's ``celery`` module and, when that raises ImportError
    (a missing dependency inside it, say), drops the error and reports the package's missing
    attribute instead; ``-A pkg.celery`` would show the real error, so ``-A pkg`` does too.
    """
    if ":" in spec:
        return None
    import importlib
    import importlib.util

    name = f"{spec}.celery"
    try:
        found = importlib.util.find_spec(name)
    except ImportError:  # ``spec`` is a module, not a package
        return None
    if found is None:
        return None
    try:
        importlib.import_module(name)
    except ImportError as exc:  # the only errors find_app drops; others already surface
        return exc
    return None


def _import_failed(spec: str, exc: BaseException) -> str:
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif exc.__traceback__ is not None:
        frame = exc.__traceback__
        while frame.tb_next is not None:
            frame = frame.tb_next
        where = f" ({frame.tb_frame.f_code.co_filename}, line {frame.tb_lineno})"
    return f"-A {spec}: the app failed to import: {type(exc).__name__}: {_line(exc)}{where}"


def _line(exc: BaseException) -> str:
    # The app's own message may hold a URL: its password never reaches the terminal.
    return redact(" ".join(str(exc).split()))[:200]


def app_variables(app: Any) -> dict[str, str]:
    """The app's configuration as ``OOMCHECK_*`` variables (text, as the environment gives them);
    settings the app leaves unset are left out, so oomcheck's defaults apply."""
    conf = app.conf
    out: dict[str, str] = {}
    for name, key in (
        ("OOMCHECK_BROKER_URL", "broker_url"),
        ("OOMCHECK_RESULT_BACKEND", "result_backend"),
    ):
        url = conf.get(key)
        if isinstance(url, list | tuple):
            url = url[0] if url else None  # failover list: the workers start on the first
        if isinstance(url, str) and url.strip():
            out[name] = url
    expires = conf.get("result_expires")
    # Celery's None and 0 both mean "no TTL" (a plain SET); oomcheck says that with 0
    out["OOMCHECK_RESULT_EXPIRES"] = _seconds(expires) if expires else "0"
    failure = conf.get("result_failure_expires")
    if failure is not None:
        out["OOMCHECK_RESULT_FAILURE_EXPIRES"] = _seconds(failure) if failure else "0"
    for name, key in (
        ("OOMCHECK_BROKER_TRANSPORT_OPTIONS", "broker_transport_options"),
        ("OOMCHECK_RESULT_TRANSPORT_OPTIONS", "result_backend_transport_options"),
    ):
        options = conf.get(key)
        if isinstance(options, Mapping) and options:
            out[name] = json.dumps(_plain(options))
    if isinstance(app.main, str) and app.main and app.main != "__main__":
        out["OOMCHECK_APP_NAME"] = app.main
    out.update(_beat_variables(conf))
    if str(out.get("OOMCHECK_BROKER_URL", "")).lower().startswith("sqs://"):
        out.update(_sqs_task_variables(app))
    elif str(out.get("OOMCHECK_BROKER_URL", "")).lower().startswith(("amqp://", "amqps://")):
        out.update(_quorum_variables(app))
    return out


def _quorum_variables(app: Any) -> dict[str, str]:
    """The app's quorum queues with an ``x-delivery-limit`` (from ``task_queues``' queue
    arguments) and each task's queue: AMQP's passive declare does not return a queue's
    arguments, and the management API may not be reachable, so the app is where they are."""
    limits: dict[str, dict[str, Any]] = {}
    for queue in app.conf.get("task_queues") or ():
        arguments = getattr(queue, "queue_arguments", None) or {}
        limit = arguments.get("x-delivery-limit")
        if arguments.get("x-queue-type") != "quorum" or not isinstance(limit, int):
            continue
        limits[str(queue.name)] = {
            "delivery_limit": limit,
            "dead_letter_exchange": arguments.get("x-dead-letter-exchange"),
            "dead_letter_routing_key": arguments.get("x-dead-letter-routing-key"),
        }
    if not limits:
        return {}
    routes = {"*": str(app.conf.get("task_default_queue") or "celery")}
    for name in sorted(app.tasks):
        queue = _routed_queue(app, name)
        if queue is not None and not name.startswith("celery.") and queue != routes["*"]:
            routes[name] = queue
    return {
        "OOMCHECK_QUORUM_QUEUES": json.dumps(limits),
        "OOMCHECK_TASK_QUEUES": json.dumps(routes),
    }


def _routed_queue(app: Any, name: str) -> str | None:
    """The queue Celery's router sends task ``name`` to (task_routes, the task's own queue)."""
    try:
        queue = app.amqp.router.route({}, name, (), {}).get("queue")
    except Exception:  # noqa: BLE001 - a router function of the app's may fail without arguments
        return None
    queue_name = getattr(queue, "name", queue)
    return queue_name if isinstance(queue_name, str) and queue_name else None


def _beat_variables(conf: Any) -> dict[str, str]:
    """Beat's scheduler and RedBeat's settings (read by RedBeat under these lowercase names)."""
    out: dict[str, str] = {}
    for name, key in (
        ("OOMCHECK_BEAT_SCHEDULER", "beat_scheduler"),
        ("OOMCHECK_REDBEAT_REDIS_URL", "redbeat_redis_url"),
        ("OOMCHECK_REDBEAT_KEY_PREFIX", "redbeat_key_prefix"),
        ("OOMCHECK_REDBEAT_LOCK_KEY", "redbeat_lock_key"),
    ):
        value = conf.get(key)
        if isinstance(value, type):
            # beat_scheduler may be the class itself
            value = f"{value.__module__}.{value.__qualname__}"
        if isinstance(value, str) and value.strip():
            out[name] = value
    return out


def _sqs_task_variables(app: Any) -> dict[str, str]:
    """Each task's acks_late and time_limit: on SQS no worker can be asked for them (no remote
    control), and a death's verdict for a task depends on its ack mode."""
    modes: dict[str, bool] = {"*": bool(app.conf.get("task_acks_late"))}
    limits: dict[str, float] = {}
    default_limit = app.conf.get("task_time_limit")
    for name, task in sorted(app.tasks.items()):
        if name.startswith("celery."):
            continue
        modes[name] = bool(getattr(task, "acks_late", modes["*"]))
        limit = getattr(task, "time_limit", None) or default_limit
        if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
            limits[name] = float(limit)
    out = {"OOMCHECK_TASK_ACKS_LATE": json.dumps(modes)}
    if limits:
        out["OOMCHECK_TASK_LIMITS"] = json.dumps(limits)
    return out


def _seconds(value: object) -> str:
    if isinstance(value, timedelta):
        return repr(value.total_seconds())
    # anything else goes to the parser as text: a bad value is its one-line error
    return str(value)


def _plain(options: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a transport options dict: oomcheck reads only plain values
    (prefixes, timeouts, Sentinel names); callables and SSL contexts are the workers' business."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def merge(env: Mapping[str, str], app_vars: Mapping[str, str]) -> dict[str, str]:
    """``env`` over the app: an app value is dropped when the environment sets its variable or
    that variable's Celery fallback."""
    merged = dict(env)
    for name, value in app_vars.items():
        if not any(_set(env, n) for n in (name, _FALLBACKS.get(name))):
            merged[name] = value
    return merged


def app_labels(spec: str, env: Mapping[str, str], app_vars: Mapping[str, str]) -> dict[str, str]:
    """Names for messages about values that came from the app: ``-A proj: result_backend``."""
    used = merge(env, app_vars)
    return {
        name: f"-A {spec}: {CELERY_NAMES.get(name, name)}"
        for name, value in app_vars.items()
        if used.get(name) == value and not _set(env, name)
    }


def _set(env: Mapping[str, str], name: str | None) -> bool:
    return name is not None and bool((env.get(name) or "").strip())


# report key -> (Settings attribute, its variable, the transport options it may be derived from)
_SHOWN: tuple[tuple[str, str, str, str | None], ...] = (
    ("broker_url", "broker_url", "OOMCHECK_BROKER_URL", None),
    ("result_backend", "result_backend", "OOMCHECK_RESULT_BACKEND", None),
    (
        "broker_transport_options",
        "broker_transport_options",
        "OOMCHECK_BROKER_TRANSPORT_OPTIONS",
        None,
    ),
    (
        "result_transport_options",
        "result_transport_options",
        "OOMCHECK_RESULT_TRANSPORT_OPTIONS",
        None,
    ),
    (
        "broker_keyprefix",
        "broker_keyprefix",
        "OOMCHECK_BROKER_KEYPREFIX",
        "OOMCHECK_BROKER_TRANSPORT_OPTIONS",
    ),
    (
        "result_keyprefix",
        "result_keyprefix",
        "OOMCHECK_RESULT_KEYPREFIX",
        "OOMCHECK_RESULT_TRANSPORT_OPTIONS",
    ),
    (
        "visibility_timeout",
        "policy.visibility_timeout_s",
        "OOMCHECK_VISIBILITY_TIMEOUT",
        "OOMCHECK_BROKER_TRANSPORT_OPTIONS",
    ),
    ("result_expires", "result_expires_s", "OOMCHECK_RESULT_EXPIRES", None),
    ("result_failure_expires", "result_failure_expires_s", "OOMCHECK_RESULT_FAILURE_EXPIRES", None),
    ("app_name", "policy.app_name", "OOMCHECK_APP_NAME", None),
)
_DERIVED_KEY = {
    "broker_keyprefix": "global_keyprefix",
    "result_keyprefix": "global_keyprefix",
    "visibility_timeout": "visibility_timeout",
}


def origins(
    settings: Settings,
    env: Mapping[str, str],
    app_vars: Mapping[str, str],
    flags: Mapping[str, str],
) -> dict[str, SettingOrigin]:
    """Each Celery-side setting's value (passwords masked) and where it came from: ``flag
    --broker``, ``env OOMCHECK_BROKER_URL``, ``env CELERY_BROKER_URL``, ``app``, ``default``;
    a prefix or visibility timeout read from transport options says so. ``env`` is the
    environment with the flags' values in it; ``flags`` maps a variable to its flag."""
    out: dict[str, SettingOrigin] = {}
    for key, attribute, name, options_name in _SHOWN:
        source = _source(name, env, app_vars, flags)
        if source == "default" and options_name is not None:
            options = getattr(settings, _OPTIONS_ATTRIBUTE[options_name])
            if _DERIVED_KEY[key] in options:
                source = f"{_source(options_name, env, app_vars, flags)}, {_DERIVED_KEY[key]}"
        out[key] = SettingOrigin(_shown(_value(settings, attribute), settings), source)
    return out


_OPTIONS_ATTRIBUTE = {
    "OOMCHECK_BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "OOMCHECK_RESULT_TRANSPORT_OPTIONS": "result_transport_options",
}


def _source(
    name: str, env: Mapping[str, str], app_vars: Mapping[str, str], flags: Mapping[str, str]
) -> str:
    if name in flags and _set(env, name):
        return f"flag {flags[name]}"
    for candidate in (name, _FALLBACKS.get(name)):
        if candidate is not None and _set(env, candidate):
            return f"env {candidate}"
    return "app" if name in app_vars else "default"


def _value(settings: Settings, attribute: str) -> Any:
    if attribute.startswith("policy."):
        return getattr(settings.policy, attribute[len("policy.") :])
    return getattr(settings, attribute)


def _shown(value: Any, settings: Settings) -> str | float | None:
    if value is None or isinstance(value, int | float):
        return value
    text = json.dumps(value, sort_keys=True) if isinstance(value, Mapping) else str(value)
    # the known passwords whole first: a password holding '?' or '@' would cut redact()'s
    # reading of the URL short and leave a piece of it
    for secret in sorted(settings.secrets(), key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact(text)
