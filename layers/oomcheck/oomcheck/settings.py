"""One Settings object, read and validated once from the environment (Lambda) or flags (CLI).

URLs may be references to a secret instead of the secret itself, so that a password never sits in
a plain environment variable: ``ssm:/oomcheck/broker-url`` (SecureString, decrypted) or
``secretsmanager:oomcheck/broker-url`` (or the full ARN of either). They are read through
Powertools Parameters, which caches them for five minutes across invocations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oomcheck.model import Policy


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it wants."""


Resolver = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str
    result_backend: str | None = None
    broker_keyprefix: str = ""
    result_keyprefix: str = ""
    result_expires_s: float | None = 86400.0
    # Celery 5.7's result_failure_expires: FAILURE records' TTL, when it differs
    result_failure_expires_s: float | None = None
    # Celery's broker_transport_options / result_backend_transport_options (master_name for
    # Sentinel, global_keyprefix, visibility_timeout...)
    broker_transport_options: Mapping[str, Any] = field(default_factory=dict)
    result_transport_options: Mapping[str, Any] = field(default_factory=dict)
    table: str | None = None
    target: str = "default"
    topic_arn: str | None = None
    log_groups: tuple[str, ...] = ()
    # ECS/EKS container names (globs) that run workers; others' exits (sidecars) are ignored
    containers: tuple[str, ...] = ()
    state_file: str = ""
    inspect_timeout_s: float = 1.0
    reping_timeout_s: float = 2.0
    # How often a run waits the full inspect timeout to discover workers the roster lacks.
    discovery_interval_s: float = 300.0
    watch_interval_s: float = 5.0
    lease_s: float = 90.0
    scan_budget: int | None = None
    policy: Policy = field(default_factory=Policy)

    @property
    def broker_transport(self) -> str:
        scheme = self.broker_url.split("://", 1)[0].lower()
        if scheme in ("redis", "rediss", "sentinel", "redis+socket", "redis+cluster"):
            return "redis"
        if scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
            return "amqp"
        return "other"

    @property
    def backend_is_redis(self) -> bool:
        return self.result_backend is not None and self.result_backend.split("://", 1)[
            0
        ].lower() in ("redis", "rediss", "sentinel", "redis+cluster")

    def secrets(self) -> tuple[str, ...]:
        """Every password in the configured URLs, for redaction of error messages."""
        found = []
        for url in (self.broker_url, self.result_backend):
            if not url:
                continue
            for part in url.split(";"):
                password = _url_password(part)
                if password:
                    found.append(password)
        return tuple(found)

    def with_overrides(self, **changes: Any) -> Settings:
        clean = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **clean)


def _url_password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return unquote(parts.password) if parts.password else None


def default_state_file() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "oomcheck" / "state.json")


def resolve_reference(value: str) -> str:
    """Turn an ``ssm:`` / ``secretsmanager:`` reference (or ARN) into its secret value."""
    kind, name = _reference(value)
    if kind is None:
        return value
    from aws_lambda_powertools.utilities import parameters

    try:
        if kind == "ssm":
            return str(parameters.get_parameter(name, decrypt=True))
        return str(parameters.get_secret(name))
    except Exception as exc:
        # The reference itself is not secret; the value never reaches this message.
        raise SettingsError(
            f"could not read {kind} parameter {name!r}: {type(exc).__name__}"
        ) from exc


def _reference(value: str) -> tuple[str | None, str]:
    if value.startswith("ssm:"):
        return "ssm", value[4:]
    if value.startswith("secretsmanager:"):
        return "secretsmanager", value[len("secretsmanager:") :]
    if value.startswith("arn:aws:ssm:") and ":parameter" in value:
        return "ssm", "/" + value.split(":parameter/", 1)[1]
    if value.startswith("arn:aws:secretsmanager:"):
        return "secretsmanager", value
    return None, value


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def _req_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    assert value is not None
    return value


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {raw!r}")
    return value


def _json_map(env: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object: {exc.msg}") from None
    if not isinstance(value, dict):
        raise SettingsError(f'{name} must be a JSON object, e.g. {{"app.tasks.report": 600}}')
    return value


def from_env(env: Mapping[str, str] | None = None, resolve: Resolver | None = None) -> Settings:
    """Read every OOMCHECK_* variable (README, "Settings"); raise SettingsError on bad input."""
    env = os.environ if env is None else env
    resolve = resolve or resolve_reference
    broker = env.get("OOMCHECK_BROKER_URL") or env.get("CELERY_BROKER_URL")
    if not broker:
        raise SettingsError(
            "no broker: set OOMCHECK_BROKER_URL (or CELERY_BROKER_URL) to the workers' broker URL"
        )
    backend = env.get("OOMCHECK_RESULT_BACKEND") or env.get("CELERY_RESULT_BACKEND") or None
    expectations = {}
    for task, seconds in _json_map(env, "OOMCHECK_TASK_LIMITS").items():
        if not isinstance(seconds, int | float) or seconds <= 0:
            raise SettingsError(f"OOMCHECK_TASK_LIMITS[{task!r}] must be a positive number")
        expectations[str(task)] = float(seconds)
    worker_map = {str(k): str(v) for k, v in _json_map(env, "OOMCHECK_WORKER_MAP").items()}
    expires = _float(env, "OOMCHECK_RESULT_EXPIRES", 86400.0)
    broker_options = _json_map(env, "OOMCHECK_BROKER_TRANSPORT_OPTIONS")
    result_options = _json_map(env, "OOMCHECK_RESULT_TRANSPORT_OPTIONS")
    visibility = broker_options.get("visibility_timeout", 3600.0)
    if not isinstance(visibility, int | float) or isinstance(visibility, bool):
        raise SettingsError("OOMCHECK_BROKER_TRANSPORT_OPTIONS visibility_timeout must be seconds")
    policy = Policy(
        visibility_timeout_s=_req_float(env, "OOMCHECK_VISIBILITY_TIMEOUT", float(visibility)),
        remind_after_s=_req_float(env, "OOMCHECK_REMIND_AFTER", 3600.0),
        poison_kills=_int(env, "OOMCHECK_POISON_KILLS", 3) or 3,
        poison_window_s=_req_float(env, "OOMCHECK_POISON_WINDOW", 6 * 3600.0),
        task_expectations=expectations,
        default_task_limit_s=_float(env, "OOMCHECK_DEFAULT_TASK_LIMIT", None),
        busy_limit_s=_req_float(env, "OOMCHECK_BUSY_LIMIT", 3600.0),
        source_alert_after=_int(env, "OOMCHECK_SOURCE_ALERT_AFTER", 3) or 3,
        app_name=env.get("OOMCHECK_APP_NAME") or None,
        worker_map=worker_map,
    )
    log_groups = tuple(
        g.strip() for g in env.get("OOMCHECK_LOG_GROUPS", "").split(",") if g.strip()
    )
    settings = Settings(
        broker_url=resolve(broker),
        result_backend=resolve(backend) if backend else None,
        broker_keyprefix=env.get("OOMCHECK_BROKER_KEYPREFIX")
        or str(broker_options.get("global_keyprefix", "")),
        result_keyprefix=env.get("OOMCHECK_RESULT_KEYPREFIX")
        or str(result_options.get("global_keyprefix", "")),
        result_expires_s=expires or None,
        result_failure_expires_s=_float(env, "OOMCHECK_RESULT_FAILURE_EXPIRES", None) or None,
        broker_transport_options=broker_options,
        result_transport_options=result_options,
        table=env.get("OOMCHECK_TABLE") or None,
        target=env.get("OOMCHECK_TARGET") or "default",
        topic_arn=env.get("OOMCHECK_TOPIC_ARN") or None,
        log_groups=log_groups,
        containers=tuple(
            c.strip() for c in env.get("OOMCHECK_CONTAINERS", "").split(",") if c.strip()
        ),
        state_file=env.get("OOMCHECK_STATE_FILE") or default_state_file(),
        inspect_timeout_s=_req_float(env, "OOMCHECK_INSPECT_TIMEOUT", 1.0),
        reping_timeout_s=_req_float(env, "OOMCHECK_REPING_TIMEOUT", 2.0),
        discovery_interval_s=_req_float(env, "OOMCHECK_DISCOVERY_INTERVAL", 300.0),
        watch_interval_s=_req_float(env, "OOMCHECK_WATCH_INTERVAL", 5.0),
        scan_budget=_int(env, "OOMCHECK_SCAN_BUDGET", None),
        policy=policy,
    )
    if settings.inspect_timeout_s <= 0 or settings.watch_interval_s <= 0:
        raise SettingsError("OOMCHECK_INSPECT_TIMEOUT and OOMCHECK_WATCH_INTERVAL must be > 0")
    return settings


# Every variable from_env() reads: the template test checks that template.yaml sets the ones the
# Lambda needs and that nothing is read that is not listed here.
ENV_VARS = (
    "OOMCHECK_BROKER_URL",
    "CELERY_BROKER_URL",
    "OOMCHECK_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND",
    "OOMCHECK_BROKER_KEYPREFIX",
    "OOMCHECK_RESULT_KEYPREFIX",
    "OOMCHECK_RESULT_EXPIRES",
    "OOMCHECK_RESULT_FAILURE_EXPIRES",
    "OOMCHECK_BROKER_TRANSPORT_OPTIONS",
    "OOMCHECK_RESULT_TRANSPORT_OPTIONS",
    "OOMCHECK_TABLE",
    "OOMCHECK_TARGET",
    "OOMCHECK_TOPIC_ARN",
    "OOMCHECK_LOG_GROUPS",
    "OOMCHECK_CONTAINERS",
    "OOMCHECK_STATE_FILE",
    "OOMCHECK_INSPECT_TIMEOUT",
    "OOMCHECK_REPING_TIMEOUT",
    "OOMCHECK_DISCOVERY_INTERVAL",
    "OOMCHECK_WATCH_INTERVAL",
    "OOMCHECK_SCAN_BUDGET",
    "OOMCHECK_VISIBILITY_TIMEOUT",
    "OOMCHECK_REMIND_AFTER",
    "OOMCHECK_POISON_KILLS",
    "OOMCHECK_POISON_WINDOW",
    "OOMCHECK_TASK_LIMITS",
    "OOMCHECK_DEFAULT_TASK_LIMIT",
    "OOMCHECK_BUSY_LIMIT",
    "OOMCHECK_SOURCE_ALERT_AFTER",
    "OOMCHECK_APP_NAME",
    "OOMCHECK_WORKER_MAP",
)
