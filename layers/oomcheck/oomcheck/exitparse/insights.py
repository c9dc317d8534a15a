"""EKS Container Insights performance records (``/aws/containerinsights/<cluster>/performance``),
``Type`` = ``Container``.

The CloudWatch agent (and the ADOT receiver) writes ``number_of_container_restarts`` as the number
of restarts since *its own previous sample* of that container (a delta, absent from its first
sample), while ``container_last_termination_reason`` is copied from the pod status on every record
until the next termination. So a record is a restart exactly when its count is > 0, and the reason
is read only from such a record: a reason on a record with no count or 0 is stale, whatever it
says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from oomcheck.exitparse.common import (
    EXIT_SIGKILL,
    MALFORMED,
    Format,
    Parsed,
    bounded_time,
    clean_text,
    epoch_ms,
    host_name,
    int_or_none,
    short_str,
)
from oomcheck.model import Cause, ExitEvidence

__all__ = ["eks_cause", "parse_container_insights"]


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
        return MALFORMED
    restarts_raw = record.get("number_of_container_restarts")
    if restarts_raw is None:
        # The agent's first sample of a container: restarts before it are history, not news.
        return Parsed(Format.EKS)
    restarts = int_or_none(restarts_raw, low=0, high=1_000_000)
    if restarts is None:
        return Parsed(Format.EKS, skipped=1)
    if restarts == 0:
        return Parsed(Format.EKS)
    pod = host_name(kube.get("pod_name"))
    container = clean_text(short_str(kube.get("container_name"), 253) or "", 253)
    namespace = clean_text(short_str(kube.get("namespace_name"), 253) or "", 253) or "default"
    if not pod or not container:
        return Parsed(Format.EKS, skipped=1)
    if containers and not any(fnmatchcase(container, p) for p in containers):
        return Parsed(Format.EKS)
    at = bounded_time(epoch_ms(record.get("Timestamp")), timestamp)
    if at is None:
        return Parsed(Format.EKS, skipped=1)
    reason = short_str(record.get("container_last_termination_reason"), 64)
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
        text=clean_text(text),
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
