"""Parse exit evidence out of CloudWatch Logs messages. Pure: text in, ExitEvidence out.

One module per source a message comes from, told apart per message so one log group may hold any
mix of them:

- ``ecs``: "ECS Task State Change" events routed by EventBridge to a log group;
- ``insights``: EKS Container Insights performance records (``Type`` = ``Container``);
- ``memory``: the container memory samples of ECS and EKS Container Insights ``Container``
  records (``Parsed.memory``), read from the same messages;
- ``kernel``: kernel OOM-killer lines (syslog, RFC 3339/5424, dmesg) and journald JSON records.

Nothing here raises on bad input: a message that is too long, not valid JSON, nested deeper than
``safejson.MAX_DEPTH``, or a recognised event with unusable parts is counted in
``Parsed.skipped`` and the rest of it is still used. Times are POSIX seconds (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence

from oomcheck.exitparse.common import (
    EXIT_SIGKILL,
    EXIT_SIGTERM,
    MALFORMED,
    MAX_MESSAGE_CHARS,
    MAX_PID,
    MAX_SKEW_S,
    MAX_TEXT_CHARS,
    OTHER,
    Format,
    Parsed,
)
from oomcheck.exitparse.ecs import (
    DELIBERATE_STOP_CODES,
    MAX_CONTAINERS,
    OOM_REASON_PREFIX,
    ecs_cause,
    parse_ecs_event,
)
from oomcheck.exitparse.insights import eks_cause, parse_container_insights
from oomcheck.exitparse.kernel import parse_journal_record, parse_kernel_line
from oomcheck.exitparse.memory import parse_ecs_memory, parse_eks_memory
from oomcheck.safejson import loads

__all__ = [
    "DELIBERATE_STOP_CODES",
    "EXIT_SIGKILL",
    "EXIT_SIGTERM",
    "MAX_CONTAINERS",
    "MAX_MESSAGE_CHARS",
    "MAX_PID",
    "MAX_SKEW_S",
    "MAX_TEXT_CHARS",
    "OOM_REASON_PREFIX",
    "Format",
    "Parsed",
    "ecs_cause",
    "eks_cause",
    "parse_container_insights",
    "parse_ecs_event",
    "parse_ecs_memory",
    "parse_eks_memory",
    "parse_journal_record",
    "parse_kernel_line",
    "parse_message",
]


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
        return MALFORMED
    if len(message) > MAX_MESSAGE_CHARS:
        return MALFORMED
    text = message.strip()
    if text.startswith("{"):
        try:
            value = loads(text)
        except ValueError:  # malformed, or nested deeper than safejson.MAX_DEPTH
            return MALFORMED
        if not isinstance(value, dict):
            return MALFORMED
        if value.get("detail-type") == "ECS Task State Change":
            return parse_ecs_event(value, timestamp=timestamp, containers=containers)
        if value.get("Type") == "Container":
            return _container_record(value, timestamp, containers)
        return parse_journal_record(value, timestamp=timestamp, stream=stream)
    if "Killed process" in text:
        return parse_kernel_line(text, timestamp=timestamp, stream=stream)
    return OTHER


def _container_record(
    record: dict[str, object], timestamp: float | None, containers: Sequence[str]
) -> Parsed:
    """A Container Insights ``Container`` record: EKS (a ``kubernetes`` object) may be a restart
    and is a memory sample; ECS (a ``TaskId``) is a memory sample."""
    if isinstance(record.get("kubernetes"), dict):
        restart = parse_container_insights(record, timestamp=timestamp, containers=containers)
        memory = parse_eks_memory(record, timestamp=timestamp, containers=containers)
        # One bad record is one skip, whichever of its two readings noticed it.
        return Parsed(
            Format.EKS, restart.evidence, max(restart.skipped, memory.skipped), memory.memory
        )
    if "kubernetes" in record:
        return MALFORMED
    if "TaskId" in record:
        return parse_ecs_memory(record, timestamp=timestamp, containers=containers)
    return OTHER
