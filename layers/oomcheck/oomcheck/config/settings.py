"""One Settings object, read and validated once from the environment (Lambda) or flags (CLI).

Every variable is a row of :data:`VARIABLES`: its name, the field it sets, a parser that says what
it wants, and a default. An empty variable means the default (the template passes '' for tuning
parameters left blank). Numbers must be finite and in range; a bad value is a one-line
:class:`SettingsError` naming the variable, and never quoting a URL (it may hold a password).

URLs may be references to a secret instead of the secret itself, so that a password never sits in
a plain environment variable: ``ssm:/oomcheck/broker-url`` (SecureString, decrypted) or
``secretsmanager:oomcheck/broker-url`` (or the full ARN of either). They are read once per
container (settings are), with boto3 on the process's one session (oomcheck.aws.session).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oomcheck.alerting.runbooks import Runbooks, kind_links, link_url
from oomcheck.config import parsers, urls
from oomcheck.config.parsers import DAY, HOUR, MINUTE, YEARS_10, Parser
from oomcheck.model import Policy


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it wants."""


Resolver = Callable[[str], str]

_REDIS_SCHEMES = (
    "redis",
    "rediss",
    "sentinel",
    "redis+cluster",
    "rediss+cluster",
    "redis+socket",
    "unix",
    "socket",
)
# Redis socket forms a result backend may use and a broker may not (kombu: "No such transport")
_NOT_BROKER_SCHEMES = ("unix", "socket")
_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp", "librabbitmq")
# kombu's Amazon SQS transport (credentials from the environment or the role)
_SQS_SCHEMES = ("sqs",)

# Redis TTLs and Celery's visibility_timeout are sometimes set to years to mean "never".


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
    # Custom notifications for chat (oomcheck.alerting.chat) and alerts as EventBridge events:
    # both off when None
    chat_topic_arn: str | None = None
    event_bus: str | None = None
    # Runbook links in every alert: one for all kinds, and per-kind overrides (kind -> URL)
    runbook_url: str | None = None
    runbook_urls: Mapping[str, str] = field(default_factory=dict)
    # how long a new incident's open waits for others to go out with (Alertmanager's group_wait)
    group_wait_s: float = 0.0
    log_groups: tuple[str, ...] = ()
    # ECS/EKS container names (globs) that run workers; others' exits (sidecars) are ignored
    containers: tuple[str, ...] = ()
    # queues whose backlog is read every run, besides those the workers report consuming
    queues: tuple[str, ...] = ()
    # ECS services (cluster/service) whose running tasks and addresses are looked up
    ecs_services: tuple[str, ...] = ()
    state_file: str = ""
    inspect_timeout_s: float = 1.0
    reping_timeout_s: float = 2.0
    # How often a run waits the full inspect timeout to discover workers the roster lacks.
    discovery_interval_s: float = 300.0
    watch_interval_s: float = 5.0
    lease_s: float = 90.0
    scan_budget: int | None = None
    # Celery beat's scheduler (beat_scheduler); only redbeat.RedBeatScheduler can be read
    beat_scheduler: str | None = None
    # RedBeat's Redis (redbeat_redis_url; None: the broker's) and its keys
    redbeat_redis_url: str | None = None
    redbeat_key_prefix: str = "redbeat:"
    redbeat_lock_key: str | None = None
    # RabbitMQ's management API (its base URL; credentials from its userinfo, else the broker
    # URL's): lists the workers' pidbox queues, so a worker started since the last discovery is
    # asked in the same check. None: new workers come from STARTED records and discovery only.
    rabbitmq_api_url: str | None = None
    # task names that get a metric of their own (TaskDeaths, dimension task); none by default,
    # since each name is a metric CloudWatch charges for
    metric_tasks: frozenset[str] = frozenset()
    policy: Policy = field(default_factory=Policy)

    @property
    def broker_transport(self) -> str:
        scheme = urls.scheme_of(self.broker_url)
        if scheme in _REDIS_SCHEMES:
            return "redis"
        if scheme in _AMQP_SCHEMES:
            return "amqp"
        if scheme in _SQS_SCHEMES:
            return "sqs"
        return "other"

    @property
    def backend_is_redis(self) -> bool:
        return (
            self.result_backend is not None
            and urls.scheme_of(self.result_backend) in _REDIS_SCHEMES
        )

    @property
    def runbooks(self) -> Runbooks:
        return Runbooks(self.runbook_url, self.runbook_urls)

    def secrets(self) -> tuple[str, ...]:
        """Every password in the configured URLs and Sentinel options, for redaction."""
        found: list[str] = []
        for url in (
            self.broker_url,
            self.result_backend,
            self.redbeat_redis_url,
            self.rabbitmq_api_url,
        ):
            if url:
                found.extend(urls.passwords(url))
        for options in (self.broker_transport_options, self.result_transport_options):
            sentinel = options.get("sentinel_kwargs")
            if isinstance(sentinel, Mapping) and sentinel.get("password"):
                found.append(str(sentinel["password"]))
        # kombu's SQS predefined_queues may carry a key pair per queue
        predefined = self.broker_transport_options.get("predefined_queues")
        for entry in predefined.values() if isinstance(predefined, Mapping) else ():
            if isinstance(entry, Mapping) and entry.get("secret_access_key"):
                found.append(str(entry["secret_access_key"]))
        return tuple(dict.fromkeys(found))

    def with_overrides(self, **changes: Any) -> Settings:
        clean = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **clean)


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    # a Settings field, or "policy.<field>"
    field: str
    parse: Parser
    default: Any = None
    # read when ``name`` is unset or empty (Celery's own variable names)
    fallback: str | None = None
    # a URL that may be an ssm:/secretsmanager: reference, resolved before parsing
    secret: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "OOMCHECK_BROKER_URL", "broker_url", parsers.url, None, "CELERY_BROKER_URL", secret=True
    ),
    Variable(
        "OOMCHECK_RESULT_BACKEND",
        "result_backend",
        parsers.url,
        None,
        "CELERY_RESULT_BACKEND",
        True,
    ),
    # None: from the transport options' global_keyprefix, else ""
    Variable("OOMCHECK_BROKER_KEYPREFIX", "broker_keyprefix", parsers.text),
    Variable("OOMCHECK_RESULT_KEYPREFIX", "result_keyprefix", parsers.text),
    Variable(
        "OOMCHECK_RESULT_EXPIRES",
        "result_expires_s",
        parsers.seconds(1, YEARS_10, zero_is_none=True),
        86400.0,
    ),
    Variable(
        "OOMCHECK_RESULT_FAILURE_EXPIRES",
        "result_failure_expires_s",
        parsers.seconds(1, YEARS_10, zero_is_none=True),
    ),
    Variable(
        "OOMCHECK_BROKER_TRANSPORT_OPTIONS", "broker_transport_options", parsers.json_object, {}
    ),
    Variable(
        "OOMCHECK_RESULT_TRANSPORT_OPTIONS", "result_transport_options", parsers.json_object, {}
    ),
    Variable("OOMCHECK_TABLE", "table", parsers.text),
    Variable("OOMCHECK_TARGET", "target", parsers.text, "default"),
    Variable("OOMCHECK_TOPIC_ARN", "topic_arn", parsers.text),
    Variable("OOMCHECK_CHAT_TOPIC_ARN", "chat_topic_arn", parsers.text),
    Variable("OOMCHECK_EVENT_BUS", "event_bus", parsers.text),
    Variable("OOMCHECK_RUNBOOK_URL", "runbook_url", link_url),
    Variable("OOMCHECK_RUNBOOK_URLS", "runbook_urls", kind_links, {}),
    Variable("OOMCHECK_GROUP_WAIT", "group_wait_s", parsers.seconds(0, HOUR), 0.0),
    Variable("OOMCHECK_LOG_GROUPS", "log_groups", parsers.names, ()),
    Variable("OOMCHECK_CONTAINERS", "containers", parsers.names, ()),
    Variable("OOMCHECK_QUEUES", "queues", parsers.names, ()),
    # None: default_state_file()
    Variable("OOMCHECK_STATE_FILE", "state_file", parsers.text),
    Variable(
        "OOMCHECK_INSPECT_TIMEOUT", "inspect_timeout_s", parsers.seconds(0, MINUTE, above=True), 1.0
    ),
    Variable(
        "OOMCHECK_REPING_TIMEOUT", "reping_timeout_s", parsers.seconds(0, MINUTE, above=True), 2.0
    ),
    Variable("OOMCHECK_DISCOVERY_INTERVAL", "discovery_interval_s", parsers.seconds(0, DAY), 300.0),
    Variable("OOMCHECK_WATCH_INTERVAL", "watch_interval_s", parsers.seconds(0.1, 900.0), 5.0),
    Variable("OOMCHECK_SCAN_BUDGET", "scan_budget", parsers.count(1, 1_000_000_000)),
    # None: the broker transport options' visibility_timeout, else Celery's 3600
    Variable(
        "OOMCHECK_VISIBILITY_TIMEOUT",
        "policy.visibility_timeout_s",
        parsers.seconds(0, YEARS_10, above=True),
    ),
    Variable(
        "OOMCHECK_REMIND_AFTER", "policy.remind_after_s", parsers.seconds(MINUTE, 30 * DAY), 3600.0
    ),
    Variable("OOMCHECK_POISON_KILLS", "policy.poison_kills", parsers.count(1, 1000), 3),
    Variable(
        "OOMCHECK_POISON_WINDOW",
        "policy.poison_window_s",
        parsers.seconds(MINUTE, 30 * DAY),
        6 * HOUR,
    ),
    Variable("OOMCHECK_TASK_LIMITS", "policy.task_expectations", parsers.task_limits, {}),
    Variable("OOMCHECK_DEFAULT_TASK_LIMIT", "policy.default_task_limit_s", parsers.TASK_LIMIT),
    Variable("OOMCHECK_BUSY_LIMIT", "policy.busy_limit_s", parsers.seconds(1, 30 * DAY), 3600.0),
    Variable("OOMCHECK_SOURCE_ALERT_AFTER", "policy.source_alert_after", parsers.count(1, 1000), 3),
    Variable("OOMCHECK_APP_NAME", "policy.app_name", parsers.text),
    Variable("OOMCHECK_WORKER_MAP", "policy.worker_map", parsers.string_map, {}),
    # memory_pressure and queue_orphaned (issue 11)
    Variable("OOMCHECK_MEMORY_THRESHOLD", "policy.memory_threshold", parsers.share, 0.9),
    Variable("OOMCHECK_MEMORY_SAMPLES", "policy.memory_samples", parsers.count(1, 60), 2),
    Variable(
        "OOMCHECK_QUEUE_ORPHAN_AFTER",
        "policy.queue_orphan_after_s",
        parsers.seconds(0, 7 * DAY),
        300.0,
    ),
    Variable("OOMCHECK_IGNORED_QUEUES", "policy.ignored_queues", parsers.name_set, frozenset()),
    # beat_stopped (issue 19)
    Variable("OOMCHECK_BEAT_SCHEDULER", "beat_scheduler", parsers.text),
    Variable("OOMCHECK_REDBEAT_REDIS_URL", "redbeat_redis_url", parsers.url, secret=True),
    Variable("OOMCHECK_REDBEAT_KEY_PREFIX", "redbeat_key_prefix", parsers.text, "redbeat:"),
    Variable("OOMCHECK_REDBEAT_LOCK_KEY", "redbeat_lock_key", parsers.text),
    Variable("OOMCHECK_BEAT_GRACE", "policy.beat_grace_s", parsers.seconds(0, DAY), 60.0),
    Variable("OOMCHECK_BEAT_CONTAINERS", "policy.beat_containers", parsers.names, ()),
    # Amazon SQS (issue 18): what a worker's death did to a task's message depends on this
    Variable("OOMCHECK_TASK_ACKS_LATE", "policy.task_acks_late", parsers.acks_late, {}),
    Variable("OOMCHECK_ECS_SERVICES", "ecs_services", parsers.ecs_services, ()),
    # RabbitMQ's management API (issue 17): new workers' pidbox queues, listed in one GET
    Variable("OOMCHECK_RABBITMQ_API_URL", "rabbitmq_api_url", parsers.http_url, secret=True),
    # RabbitMQ quorum queues (issue 18): where a kill loop's message goes at the delivery limit
    Variable("OOMCHECK_QUORUM_QUEUES", "policy.quorum_queues", parsers.quorum_queues, {}),
    Variable("OOMCHECK_TASK_QUEUES", "policy.task_queues", parsers.task_queues, {}),
    # history by task type (issue 21): seconds or a span (30d, 2w)
    Variable("OOMCHECK_HISTORY_RETENTION", "policy.history_retention_s", parsers.span, 30 * DAY),
    # task names that get a TaskDeaths metric with a task dimension (each costs a metric)
    Variable("OOMCHECK_METRIC_TASKS", "metric_tasks", parsers.name_set, frozenset()),
)

# Every variable from_env() reads: the template test checks that template.yaml sets the ones the
# Lambda needs and that nothing is read that is not listed here.
ENV_VARS: tuple[str, ...] = tuple(
    name for v in VARIABLES for name in (v.name, v.fallback) if name is not None
)
_VISIBILITY = parsers.seconds(0, YEARS_10, above=True)


def from_env(
    env: Mapping[str, str] | None = None,
    resolve: Resolver | None = None,
    labels: Mapping[str, str] | None = None,
) -> Settings:
    """Read every variable of :data:`VARIABLES`; raise SettingsError on bad input.

    ``labels`` renames variables in messages (the CLI's ``--broker`` sets OOMCHECK_BROKER_URL).
    """
    env = os.environ if env is None else env
    resolve = resolve or resolve_reference
    labels = labels or {}
    values: dict[str, Any] = {}
    for variable in VARIABLES:
        name, raw = _raw(env, variable)
        label = labels.get(name, name)
        if raw is None:
            # a copy: a default dict shared by every Settings would be one mutation from a bug
            values[variable.field] = copy.copy(variable.default)
            continue
        try:
            text = resolve(raw) if variable.secret else raw
            values[variable.field] = variable.parse(text)
        except ValueError as exc:  # SettingsError from resolve included
            raise SettingsError(f"{label} {_one_line(exc)}") from None
    if not values["broker_url"]:
        raise SettingsError(
            "no broker: set OOMCHECK_BROKER_URL (or CELERY_BROKER_URL) to the workers' broker URL"
        )
    settings = _assemble(values)
    _check_urls(settings, labels)
    return settings


def _raw(env: Mapping[str, str], variable: Variable) -> tuple[str, str | None]:
    for name in (variable.name, variable.fallback):
        if name is not None and (env.get(name) or "").strip():
            return name, env[name]
    return variable.name, None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _assemble(values: Mapping[str, Any]) -> Settings:
    """Settings from parsed values, with the defaults that depend on other variables."""
    fields = {k: v for k, v in values.items() if not k.startswith("policy.")}
    policy = {k[len("policy.") :]: v for k, v in values.items() if k.startswith("policy.")}
    broker_options = fields["broker_transport_options"]
    result_options = fields["result_transport_options"]
    if policy["visibility_timeout_s"] is None:
        visibility = broker_options.get("visibility_timeout", 3600.0)
        if isinstance(visibility, bool) or not isinstance(visibility, int | float):
            raise SettingsError(
                "OOMCHECK_BROKER_TRANSPORT_OPTIONS visibility_timeout must be a number of seconds"
            )
        try:
            policy["visibility_timeout_s"] = _VISIBILITY(repr(float(visibility)))
        except ValueError as exc:
            raise SettingsError(
                f"OOMCHECK_BROKER_TRANSPORT_OPTIONS visibility_timeout {exc}"
            ) from None
    if fields["broker_keyprefix"] is None:
        fields["broker_keyprefix"] = str(broker_options.get("global_keyprefix", ""))
    if fields["result_keyprefix"] is None:
        fields["result_keyprefix"] = str(result_options.get("global_keyprefix", ""))
    fields["state_file"] = fields["state_file"] or default_state_file()
    fields["target"] = fields["target"] or "default"
    return Settings(**fields, policy=Policy(**policy))


def _check_urls(settings: Settings, labels: Mapping[str, str]) -> None:
    """Redis URLs in full, as make_redis will read them; messages never quote the URL."""
    checks: tuple[tuple[str, str | None, Mapping[str, Any]], ...] = (
        ("OOMCHECK_BROKER_URL", settings.broker_url, settings.broker_transport_options),
        ("OOMCHECK_RESULT_BACKEND", settings.result_backend, settings.result_transport_options),
        ("OOMCHECK_REDBEAT_REDIS_URL", settings.redbeat_redis_url, {}),
    )
    broker_scheme = urls.scheme_of(settings.broker_url)
    if broker_scheme in _NOT_BROKER_SCHEMES:
        # redis-py's and Celery's result backend's socket forms: kombu (the workers' broker
        # client, and remote control's) knows neither, so a check could never reach the workers
        raise SettingsError(
            f"{labels.get('OOMCHECK_BROKER_URL', 'OOMCHECK_BROKER_URL')}: {broker_scheme}:// is "
            "not a broker URL Celery reads; a Redis broker on a Unix socket is "
            "redis+socket:///path/to/redis.sock?virtual_host=0"
        )
    if settings.rabbitmq_api_url and settings.broker_transport != "amqp":
        raise SettingsError(
            f"{labels.get('OOMCHECK_RABBITMQ_API_URL', 'OOMCHECK_RABBITMQ_API_URL')} is read only "
            f"with a RabbitMQ broker, and the broker is {broker_scheme}://"
        )
    for name, url, options in checks:
        if not url or urls.scheme_of(url) not in _REDIS_SCHEMES:
            continue
        from oomcheck.sources.redis_client import check_url

        try:
            check_url(url, transport_options=options)
        except ValueError as exc:
            raise SettingsError(f"{labels.get(name, name)}: {_one_line(exc)}") from None


def default_state_file() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "oomcheck" / "state.json")


def resolve_reference(value: str) -> str:
    """Turn an ``ssm:`` / ``secretsmanager:`` reference (or ARN) into its secret value."""
    kind, name = _reference(value)
    if kind is None:
        return value
    # boto3 on the process's one session rather than Powertools Parameters: read once per
    # container, so its cache buys nothing, while its package imports every provider and its
    # clients load botocore's data on sessions of their own (bench_cold)
    from oomcheck import aws

    try:
        if kind == "ssm":
            reply = aws.client("ssm").get_parameter(Name=name, WithDecryption=True)
            return str(reply["Parameter"]["Value"])
        secret = aws.client("secretsmanager").get_secret_value(SecretId=name)
        return str(secret["SecretString"])
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
