"""Parse exit evidence out of CloudWatch Logs messages. Pure: text in, ExitEvidence out.

Three formats, told apart per message so one log group may hold any mix of them:

- ECS "ECS Task State Change" events routed by an EventBridge rule to a log group (the log
  message is the whole event as JSON). Only tasks whose ``detail.lastStatus`` is STOPPED count;
  one piece of evidence per stopped container, since the exit code and the OOM reason are per
  container and the container name is what tells the Celery worker from its sidecars.
- EKS Container Insights performance records (``/aws/containerinsights/<cluster>/performance``),
  ``Type`` = ``Container``. The CloudWatch agent (and the ADOT receiver) writes
  ``number_of_container_restarts`` as the number of restarts since *its own previous sample* of
  that container (a delta, absent from its first sample), while
  ``container_last_termination_reason`` is copied from the pod status on every record until the
  next termination. So a record is a restart exactly when its count is > 0, and the reason is read
  only from such a record: a reason on a record with no count or 0 is stale, whatever it says.
- Kernel OOM-killer lines shipped by the CloudWatch agent or Fluent Bit: syslog lines
  (``Nov 24 13:50:29 ip-10-0-1-5 kernel: [12345.678] Memory cgroup out of memory: Killed
  process 4321 (celery) total-vm:...``), RFC 3339 syslog, RFC 5424, bare dmesg lines, and
  journald JSON (``MESSAGE``, ``_HOSTNAME``, ``__REALTIME_TIMESTAMP``).

Nothing here raises on bad input: a message that is too long, not valid JSON, or a recognised
event with unusable parts is counted in ``Parsed.skipped`` and the rest of it is still used.
Times are POSIX seconds (UTC).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from oomcheck.model import Cause, ExitEvidence

# CloudWatch accepts events up to 256 KiB (1 MiB since 2025); every format we read is a few KiB.
# Anything far larger is not ours, or is hostile, and is not worth parsing inside a 1-minute run.
MAX_MESSAGE_CHARS = 64 * 1024
MAX_TEXT_CHARS = 300
# An ECS task definition holds at most 10 containers.
MAX_CONTAINERS = 32
MAX_PID = 4_194_304  # the largest pid_max Linux allows
# A parsed time further than this from the log event's own timestamp is not trusted.
MAX_SKEW_S = 86_400.0

OOM_REASON_PREFIX = "outofmemoryerror"
# ECS stop codes that mean someone (a user, the service scheduler scaling in or deploying, a Spot
# reclaim or a termination notice) asked the task to stop: ECS sent SIGTERM, then SIGKILL after
# stopTimeout. They make a container with no exit code clean; an exit code still speaks for itself.
DELIBERATE_STOP_CODES = frozenset(
    {"UserInitiated", "ServiceSchedulerInitiated", "SpotInterruption", "TerminationNotice"}
)
# Stops in which ECS sends SIGTERM to the containers still running: a 143 (SIGTERM) there is the
# stop doing what it was asked. EssentialContainerExited is one: the other containers get SIGTERM.
_SIGTERM_STOP_CODES = DELIBERATE_STOP_CODES | {"EssentialContainerExited"}
EXIT_SIGKILL = 137
EXIT_SIGTERM = 143


class Format(StrEnum):
    ECS = "ecs"
    EKS = "eks"
    KERNEL = "kernel"
    OTHER = "other"  # not a format we read (or one of ours that says nothing about a death)
    MALFORMED = "malformed"  # too long, broken JSON, or unusable


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one log message yielded. ``skipped`` counts unusable parts of it (0 or more)."""

    format: Format
    evidence: tuple[ExitEvidence, ...] = ()
    skipped: int = 0


_OTHER = Parsed(Format.OTHER)
_MALFORMED = Parsed(Format.MALFORMED, skipped=1)


def parse_message(
    message: object,
    *,
    timestamp: float | None = None,
    stream: str | None = None,
    containers: Sequence[str] = (),
) -> Parsed:
    """Detect the format of one CloudWatch log message and parse it.

    ``timestamp`` is the log event's own time (seconds): the fallback for messages that carry no
    full time of their own (syslog lines have neither year nor zone), and the bound for those
    that do. ``stream`` is the log stream name: the host of kernel lines that name none (the
    CloudWatch agent names streams after ``{hostname}``, ``{ip_address}`` or ``{instance_id}``).
    ``containers`` are glob patterns of container names to consider (empty: all).
    """
    if not isinstance(message, str):
        return _MALFORMED
    if len(message) > MAX_MESSAGE_CHARS:
        return _MALFORMED
    text = message.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return _MALFORMED
        if not isinstance(value, dict):
            return _MALFORMED
        if value.get("detail-type") == "ECS Task State Change":
            return parse_ecs_event(value, timestamp=timestamp, containers=containers)
        if value.get("Type") == "Container" and isinstance(value.get("kubernetes"), dict):
            return parse_container_insights(value, timestamp=timestamp, containers=containers)
        return parse_journal_record(value, timestamp=timestamp, stream=stream)
    if "Killed process" in text:
        return parse_kernel_line(text, timestamp=timestamp, stream=stream)
    return _OTHER


# ----------------------------------------------------------------------------------------- ECS


def parse_ecs_event(
    event: Mapping[str, Any], *, timestamp: float | None = None, containers: Sequence[str] = ()
) -> Parsed:
    """One "ECS Task State Change" event -> one ExitEvidence per stopped container.

    Cause and cleanliness, per container, first rule that applies:
    1. ``reason`` starts with "OutOfMemoryError" (any case): OOM_KILLED, not clean.
    2. exit code 0: the process ended on its own terms (Celery exits 0 after a warm shutdown):
       clean, whatever the stop code.
    3. exit code 143 when ECS was stopping the task (a deliberate stop code, or
       EssentialContainerExited): the SIGTERM ECS sent did it; clean.
    4. exit code 137: KILLED, not clean, under any stop code; after a deliberate stop it means the
       warm shutdown outlived stopTimeout and the tasks still running were cut off.
    5. any other exit code: EXITED, not clean.
    6. no exit code: UNKNOWN; clean when the stop was deliberate or the task never started
       (TaskFailedToStart), not clean otherwise (an instance that vanished under its tasks).
    """
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return _MALFORMED
    if detail.get("lastStatus") != "STOPPED":
        return Parsed(Format.ECS)
    task_arn = _short_str(detail.get("taskArn"), 400)
    if not task_arn:
        return Parsed(Format.ECS, skipped=1)
    task_id = task_arn.rsplit("/", 1)[-1]
    cluster = _short_str(detail.get("clusterArn"), 400) or ""
    cluster_name = cluster.rsplit("/", 1)[-1] if cluster else ""
    stop_code = _short_str(detail.get("stopCode"), 64) or ""
    stopped_reason = _short_str(detail.get("stoppedReason"), 255) or ""
    at = _bounded_time(
        _first_time(detail.get("stoppedAt"), detail.get("executionStoppedAt"), event.get("time")),
        timestamp,
    )
    if at is None:
        return Parsed(Format.ECS, skipped=1)

    task_hosts = _ecs_task_hosts(detail)
    raw_containers = detail.get("containers")
    if not isinstance(raw_containers, list):
        return Parsed(Format.ECS, skipped=1)
    evidence: list[ExitEvidence] = []
    skipped = max(0, len(raw_containers) - MAX_CONTAINERS)
    for item in raw_containers[:MAX_CONTAINERS]:
        if not isinstance(item, Mapping):
            skipped += 1
            continue
        raw_name = _short_str(item.get("name"), 255)
        name = _clean_text(raw_name, 255) if raw_name else None
        if not name:
            skipped += 1
            continue
        if containers and not any(fnmatchcase(name, p) for p in containers):
            continue
        exit_code = _int_or_none(item.get("exitCode"), low=-(2**31), high=2**31 - 1)
        if item.get("exitCode") is not None and exit_code is None:
            skipped += 1
            continue
        reason = _short_str(item.get("reason"), 255)
        cause, clean = ecs_cause(exit_code, reason, stop_code)
        hosts = [*task_hosts, *_ecs_container_hosts(item)]
        hosts.append(task_id)
        # Without an exit code or reason, the same stop may be reported again by a later version
        # of the event with the code filled in: such an uninformative stop gets an id of its own
        # so that the informative one still counts. Versions repeat the same stop otherwise.
        informative = exit_code is not None or bool(reason)
        event_id = f"ecs:{cluster_name}/{task_id}/{name}" + ("" if informative else ":no-exit")
        code_text = f"exitCode {exit_code}" if exit_code is not None else "no exitCode"
        why = f"{stop_code}: {stopped_reason}" if stop_code and stopped_reason else stop_code
        text = " ".join(
            p
            for p in (
                code_text,
                reason or "",
                f"(task {task_id[:12]} container {name}" + (f", {why})" if why else ")"),
            )
            if p
        )
        evidence.append(
            ExitEvidence(
                source="ecs",
                event_id=event_id,
                at=at,
                cause=cause,
                exit_code=exit_code,
                text=_clean_text(text),
                hosts=tuple(dict.fromkeys(h for h in hosts if h)),
                process=name,
                clean=clean,
            )
        )
    return Parsed(Format.ECS, tuple(evidence), skipped)


def ecs_cause(exit_code: int | None, reason: str | None, stop_code: str) -> tuple[Cause, bool]:
    """(cause, clean) of one stopped ECS container; the rules are in parse_ecs_event."""
    if reason and reason.strip().lower().startswith(OOM_REASON_PREFIX):
        return Cause.OOM_KILLED, False
    if exit_code == 0:
        return Cause.EXITED, True
    if exit_code == EXIT_SIGTERM and stop_code in _SIGTERM_STOP_CODES:
        return Cause.KILLED, True
    if exit_code == EXIT_SIGKILL:
        return Cause.KILLED, False
    if exit_code is not None:
        return Cause.EXITED, False
    return Cause.UNKNOWN, stop_code in DELIBERATE_STOP_CODES or stop_code == "TaskFailedToStart"


def _ecs_task_hosts(detail: Mapping[str, Any]) -> list[str]:
    """The task ENI's private IPv4 address and DNS name (awsvpc: Fargate, or EC2 awsvpc)."""
    hosts: list[str] = []
    attachments = detail.get("attachments")
    if not isinstance(attachments, list):
        return hosts
    for attachment in attachments[:8]:
        if not isinstance(attachment, Mapping) or attachment.get("type") not in (None, "eni"):
            continue
        details = attachment.get("details")
        if not isinstance(details, list):
            continue
        for pair in details[:32]:
            if not isinstance(pair, Mapping):
                continue
            if pair.get("name") in ("privateIPv4Address", "privateDnsName"):
                host = _host(pair.get("value"))
                if host:
                    hosts.append(host)
    return hosts


def _ecs_container_hosts(container: Mapping[str, Any]) -> list[str]:
    """The container's ENI addresses, and under bridge networking on EC2 its Docker hostname:
    the first 12 hex digits of its runtime (container) id."""
    hosts: list[str] = []
    interfaces = container.get("networkInterfaces")
    if isinstance(interfaces, list):
        for interface in interfaces[:8]:
            if isinstance(interface, Mapping):
                host = _host(interface.get("privateIpv4Address"))
                if host:
                    hosts.append(host)
    runtime_id = container.get("runtimeId")
    if isinstance(runtime_id, str) and _DOCKER_ID.fullmatch(runtime_id):
        hosts.append(runtime_id[:12])
    return hosts


_DOCKER_ID = re.compile(r"[0-9a-f]{64}")


# ----------------------------------------------------------------------- EKS Container Insights


def parse_container_insights(
    record: Mapping[str, Any], *, timestamp: float | None = None, containers: Sequence[str] = ()
) -> Parsed:
    """One Type=Container performance record -> a restart, or nothing.

    A restart is a record whose ``number_of_container_restarts`` (restarts since the agent's
    previous sample) is > 0; its ``container_last_termination_reason`` then says why the last of
    them ended. The event id names the container instance that replaced the dead one
    (``kubernetes.docker.container_id``), or the record's own timestamp when that is missing, so
    that the same record read twice (overlapping windows) gives the same id.
    """
    kube = record.get("kubernetes")
    if not isinstance(kube, Mapping):
        return _MALFORMED
    restarts_raw = record.get("number_of_container_restarts")
    if restarts_raw is None:
        # The agent's first sample of a container: restarts before it are history, not news.
        return Parsed(Format.EKS)
    restarts = _int_or_none(restarts_raw, low=0, high=1_000_000)
    if restarts is None:
        return Parsed(Format.EKS, skipped=1)
    if restarts == 0:
        return Parsed(Format.EKS)
    pod = _host(kube.get("pod_name"))
    container = _clean_text(_short_str(kube.get("container_name"), 253) or "", 253)
    namespace = _clean_text(_short_str(kube.get("namespace_name"), 253) or "", 253) or "default"
    if not pod or not container:
        return Parsed(Format.EKS, skipped=1)
    if containers and not any(fnmatchcase(container, p) for p in containers):
        return Parsed(Format.EKS)
    at = _bounded_time(_epoch_ms(record.get("Timestamp")), timestamp)
    if at is None:
        return Parsed(Format.EKS, skipped=1)
    reason = _short_str(record.get("container_last_termination_reason"), 64)
    cause, exit_code, clean = eks_cause(reason)
    docker = kube.get("docker")
    container_id = docker.get("container_id") if isinstance(docker, Mapping) else None
    if isinstance(container_id, str) and _HEX_ID.fullmatch(container_id):
        instance = container_id[:16]
    else:
        instance = f"t{round(at * 1000)}"
    text = (
        f"pod {namespace}/{pod} container {container} restarted"
        f" ({reason or 'reason not reported'}), {restarts} restart"
        f"{'s' if restarts != 1 else ''} since the previous sample"
    )
    evidence = ExitEvidence(
        source="eks",
        event_id=f"eks:{namespace}/{pod}/{container}/{instance}",
        at=at,
        cause=cause,
        exit_code=exit_code,
        text=_clean_text(text),
        hosts=(pod,),
        process=container,
        clean=clean,
    )
    return Parsed(Format.EKS, (evidence,))


_HEX_ID = re.compile(r"[0-9a-f]{12,64}")


def eks_cause(reason: str | None) -> tuple[Cause, int | None, bool]:
    """(cause, exit code, clean) from a Kubernetes termination reason.

    Kubernetes names only OOMKilled (137) and Completed (exit 0) precisely; "Error" is any other
    non-zero exit (a liveness-probe kill included) and the record carries no exit code.
    """
    if reason is None:
        return Cause.UNKNOWN, None, False
    if reason == "OOMKilled":
        return Cause.OOM_KILLED, EXIT_SIGKILL, False
    if reason == "Completed":
        return Cause.EXITED, 0, True
    return Cause.EXITED, None, False


# -------------------------------------------------------------------------------------- kernel

# "Memory cgroup out of memory: Killed process 4321 (celery) total-vm:..." (4.19+),
# "Out of memory: Killed process ..." (global OOM), and on older kernels a bare
# "Killed process 4321 (celery) total-vm:..." after "Out of memory: Kill process ... score ...".
# comm is at most 15 characters and may hold spaces and brackets ("[celeryd: celer").
_OOM_KILL = re.compile(
    r"(?:(?P<kind>Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?)"
    r": )?Killed process (?P<pid>\d{1,9}) \((?P<comm>[^\n]{1,16}?)\)(?=[\s,]|$)(?P<tail>[^\n]*)"
)
_UPTIME = re.compile(r"^\[\s*\d+\.\d+\]\s*")
_SYSLOG_BSD = re.compile(
    r"^(?:<\d{1,3}>)?[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} (?P<host>\S{1,255}) "
    r"kernel(?:\[\d+\])?: (?P<msg>.*)$",
    re.DOTALL,
)
_SYSLOG_ISO = re.compile(
    r"^(?:<\d{1,3}>)?(?:1 )?(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
    r"(?:Z|[+-]\d{2}:?\d{2})?) (?P<host>\S{1,255}) kernel(?:\[\d+\])?(?::| - - -) (?P<msg>.*)$",
    re.DOTALL,
)
_RSS = re.compile(r"anon-rss:(\d{1,12})kB")
_HOST_OK = re.compile(r"[a-z0-9][a-z0-9._:-]{0,252}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def parse_kernel_line(
    line: str, *, timestamp: float | None = None, stream: str | None = None, host: str | None = None
) -> Parsed:
    """One kernel log line (syslog, RFC 3339 syslog, RFC 5424 or bare dmesg) -> an OOM kill.

    The host comes from ``host`` (a journald field), else the syslog prefix, else ``stream``.
    The time comes from an RFC 3339 prefix, else ``timestamp``: a classic syslog time has no year
    and no zone. The event id is the host, the pid and a digest of the kill line after "Killed
    process" (its memory figures differ from one kill to the next), so the same kill shipped by
    two agents, or read twice, gives one id.
    """
    if not isinstance(line, str) or len(line) > MAX_MESSAGE_CHARS:
        return _MALFORMED
    text = line.strip()
    line_host: str | None = None
    line_time: float | None = None
    match = _SYSLOG_BSD.match(text)
    if match:
        line_host, text = match["host"], match["msg"]
    else:
        match = _SYSLOG_ISO.match(text)
        if match:
            line_host, text = match["host"], match["msg"]
            line_time = _iso_time(match["ts"])
    text = _UPTIME.sub("", text)
    kill = _OOM_KILL.search(text)
    if kill is None:
        return Parsed(Format.KERNEL if "Killed process" in text else Format.OTHER)
    if kill["kind"] is None and "total-vm:" not in kill["tail"]:
        # Not the kernel's wording: some application's log line that mentions a killed process.
        return _OTHER
    pid = _int_or_none(int(kill["pid"]), low=1, high=MAX_PID)
    at = _bounded_time(line_time, timestamp) if line_time is not None else timestamp
    if pid is None or at is None or not math.isfinite(at):
        return Parsed(Format.KERNEL, skipped=1)
    where = _host(host) or _host(line_host) or _host(stream)
    comm = _clean_text(kill["comm"], 16)
    core = " ".join(kill.group(0)[kill.start("pid") - kill.start() :].split())
    if "total-vm:" not in core:
        core += f" @{int(at)}"
    digest = hashlib.sha256(core.encode("utf-8", "replace")).hexdigest()[:12]
    id_host = _id_host(where) if where else "-"
    rss = _RSS.search(kill["tail"])
    rss_text = f", anon-rss {int(rss[1]) // 1024} MiB" if rss else ""
    kind = f"{kill['kind']}: " if kill["kind"] else ""
    evidence = ExitEvidence(
        source="kernel",
        event_id=f"kernel:{id_host}:{pid}:{digest}",
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=EXIT_SIGKILL,
        text=_clean_text(
            f"{kind}Killed process {pid} ({comm}){rss_text}" + (f" on {where}" if where else "")
        ),
        hosts=(where,) if where else (),
        pid=pid,
        process=comm,
    )
    return Parsed(Format.KERNEL, (evidence,))


def parse_journal_record(
    record: Mapping[str, Any], *, timestamp: float | None = None, stream: str | None = None
) -> Parsed:
    """A JSON log record around a kernel line: journald export fields (``MESSAGE``,
    ``_HOSTNAME``, ``__REALTIME_TIMESTAMP`` in microseconds; Fluent Bit may strip the leading
    underscores), or a shipper's ``log`` / ``message`` field holding a syslog line."""
    message: object = None
    for key in ("MESSAGE", "message", "log", "msg"):
        if key in record:
            message = record[key]
            break
    if isinstance(message, list) and len(message) <= MAX_MESSAGE_CHARS:
        # journald exports a MESSAGE that is not valid UTF-8 as a list of byte values.
        if not all(isinstance(b, int) and 0 <= b <= 255 for b in message):
            return _MALFORMED
        message = bytes(message).decode("utf-8", "replace")
    if not isinstance(message, str):
        return _OTHER
    if "Killed process" not in message:
        return _OTHER
    host: str | None = None
    for key in ("_HOSTNAME", "HOSTNAME", "hostname", "host"):
        value = record.get(key)
        if isinstance(value, str):
            host = value
            break
    journal_time: float | None = None
    for key in ("_SOURCE_REALTIME_TIMESTAMP", "__REALTIME_TIMESTAMP", "SOURCE_REALTIME_TIMESTAMP"):
        micros = _int_or_none(record.get(key), low=0, high=2**62)
        if micros is not None:
            journal_time = micros / 1e6
            break
    at = _bounded_time(journal_time, timestamp) if journal_time is not None else timestamp
    return parse_kernel_line(message, timestamp=at, stream=stream, host=host)


# ------------------------------------------------------------------------------------- helpers


def _short_str(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit:
        return None
    return value


def _clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Printable, single-line, bounded: this text ends up in alert subjects and bodies."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 2])
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _host(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    host = value.strip().lower().rstrip(".")
    return host if _HOST_OK.fullmatch(host) else None


def _id_host(host: str) -> str:
    """The host as an id part: its first label, so that "ip-10-0-1-5" and
    "ip-10-0-1-5.ec2.internal" give the same id; IP addresses stay whole."""
    return host if _IPV4.fullmatch(host) else host.split(".", 1)[0]


def _int_or_none(value: object, *, low: int, high: int) -> int | None:
    number: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    # Integral floats and digit strings come from JSON encoders that are loose about numbers.
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20
    ):
        number = int(value)
    if number is None or not low <= number <= high:
        return None
    return number


def _iso_time(value: object) -> float | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    # fromisoformat takes at most 6 fractional digits; journald and rsyslog may give 9.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _epoch_ms(value: object) -> float | None:
    millis = _int_or_none(value, low=0, high=2**53)
    return millis / 1000.0 if millis is not None else None


def _first_time(*values: object) -> float | None:
    for value in values:
        at = _iso_time(value)
        if at is not None:
            return at
    return None


def _bounded_time(parsed: float | None, timestamp: float | None) -> float | None:
    """The message's own time unless it is missing or far from the log event's timestamp."""
    if timestamp is not None and not math.isfinite(timestamp):
        timestamp = None
    if parsed is None or not math.isfinite(parsed):
        return timestamp
    if timestamp is not None and abs(parsed - timestamp) > MAX_SKEW_S:
        return timestamp
    return parsed
