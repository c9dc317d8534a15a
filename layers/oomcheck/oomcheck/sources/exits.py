"""CloudWatch Logs as a source of exit evidence: ECS task stops, Container Insights restarts,
kernel OOM-killer lines, read with FilterLogEvents from any mix of log groups; and, from the same
pages of the Container Insights performance groups (ECS and EKS), container memory samples.

Each run reads ``[since - overlap_s, now]`` (the first run looks back ``first_lookback_s``) so
that events ingested late, or read by a run that failed halfway, are read again; the evidence
ids are stable, and the caller drops ids it has already used. The window never reaches back
further than ``max_window_s``: a checker that was off for a day reports what happens now instead
of alerting on yesterday.

Filtering and matching are ours (exitparse): the server-side filter patterns below only cut the
volume and are never trusted to be exact (moto, for one, ignores them).

Needs exactly one IAM action: ``logs:FilterLogEvents`` on each configured log group
(``arn:aws:logs:<region>:<account>:log-group:<name>:*``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from oomcheck.exitparse import Format, parse_message
from oomcheck.model import ExitEvidence, MemorySample

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient

# Container Insights performance groups hold a record per container per minute, and every
# Container record is a memory sample (EKS ones may also be restarts): the pattern drops the
# other types (Node, Pod, Task, ...). It is the query AWS's reference itself gives for these
# groups. A JSON pattern matches JSON events only, so it is used for those groups alone.
CONTAINER_INSIGHTS_PATTERN = '{ $.Type = "Container" }'
# Any other group may hold any of the three formats: keep events with one of their marks.
TEXT_PATTERN = '?"Killed process" ?"ECS Task State Change" ?"number_of_container_restarts"'
# ECS: /aws/ecs/containerinsights/<cluster>/performance; EKS: /aws/containerinsights/<cluster>/...
_CONTAINER_INSIGHTS_GROUP = re.compile(
    r"(?:^|:log-group:)/aws/(?:ecs/)?containerinsights/[^/]+/performance$"
)


def is_container_insights_group(group: str) -> bool:
    """True for an ECS or EKS Container Insights performance group (name or ARN)."""
    return bool(_CONTAINER_INSIGHTS_GROUP.search(group.removesuffix(":*")))


# Errors that concern one log group (missing, not allowed): the other groups are still read.
_GROUP_ERRORS = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "InvalidParameterException"}
)


class ExitSourceError(RuntimeError):
    """CloudWatch Logs could not be read: throttled past the client's retries, unreachable, no
    credentials, not allowed, or a log group that does not exist.

    ``partial`` holds what was read before (or besides) the failure, for a caller that prefers
    some evidence to none; ``code`` is the AWS error code when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        groups: tuple[str, ...] = (),
        partial: ExitRead | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.groups = groups
        self.partial = partial


@dataclass(frozen=True, slots=True)
class ExitRead:
    """One read. ``truncated``: the read is incomplete, because a group had more pages than
    ``max_pages`` or ``since`` lay further back than ``max_window_s``. ``skipped``: messages or
    parts of messages that were malformed, hostile or too long; ``ignored``: well-formed events
    that say nothing of a death (a task that is still running, a restart count of 0)."""

    evidence: tuple[ExitEvidence, ...]
    events_read: int
    skipped: int
    pages: int
    truncated: bool
    ignored: int = 0
    start: float = 0.0
    end: float = 0.0
    truncated_groups: tuple[str, ...] = field(default_factory=tuple)
    # Container memory samples (Container Insights), oldest first.
    memory: tuple[MemorySample, ...] = ()


class CloudWatchExitEvents:
    """Reads exit evidence from CloudWatch Logs groups with FilterLogEvents.

    ``logs_client`` is a boto3 ``logs`` client (oomcheck.aws.client builds one with adaptive
    retries, which is what the 5 requests/s FilterLogEvents quota needs). ``max_pages`` bounds the
    requests per log group per read. ``containers``: glob patterns of the container names worth
    reading (ECS and EKS), to leave sidecars out; empty means every container.
    ``server_filter`` False sends no filter pattern (for groups whose volume is small anyway).
    """

    def __init__(
        self,
        logs_client: CloudWatchLogsClient | Any,
        log_groups: Sequence[str],
        *,
        overlap_s: float = 120.0,
        max_window_s: float = 3600.0,
        max_pages: int = 50,
        first_lookback_s: float = 900.0,
        page_limit: int | None = None,
        containers: Sequence[str] = (),
        server_filter: bool = True,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        if page_limit is not None and not 1 <= page_limit <= 10_000:
            raise ValueError("page_limit must be between 1 and 10000")
        if overlap_s < 0 or max_window_s <= 0 or first_lookback_s <= 0:
            raise ValueError("overlap_s must be >= 0, max_window_s and first_lookback_s > 0")
        self._client = logs_client
        self.log_groups = tuple(dict.fromkeys(g.strip() for g in log_groups if g.strip()))
        self.overlap_s = overlap_s
        self.max_window_s = max_window_s
        self.max_pages = max_pages
        self.first_lookback_s = first_lookback_s
        self.page_limit = page_limit
        self.containers = tuple(containers)
        self.server_filter = server_filter

    def window(self, since: float | None, now: float) -> tuple[float, float, bool]:
        """(start, end, clipped): the span one read covers, in seconds."""
        if since is None or not math.isfinite(since):
            wanted = now - min(self.first_lookback_s, self.max_window_s)
        else:
            # A `since` ahead of `now` (clock skew between runs) still reads the overlap.
            wanted = min(since, now) - self.overlap_s
        floor = now - self.max_window_s
        return max(wanted, floor), now, wanted < floor

    def read(self, since: float | None, now: float) -> ExitRead:
        """Evidence logged in the window of ``since`` (the previous run, or None) and ``now``.

        Raises ExitSourceError when CloudWatch cannot be read; evidence is deduplicated by
        event id within the read, and sorted by time.
        """
        start, end, clipped = self.window(since, now)
        totals = _Totals()
        failures: list[_GroupFailed] = []
        truncated_groups: list[str] = []
        for group in self.log_groups:
            try:
                complete = self._read_group(group, start, end, totals)
            except _GroupFailed as failed:
                failures.append(failed)
                continue
            except _SourceFailed as failed:
                raise ExitSourceError(
                    f"CloudWatch Logs FilterLogEvents on {group}: {failed.message}",
                    code=failed.code,
                    groups=(group,),
                    partial=totals.result(start, end, clipped, truncated_groups),
                ) from failed.__cause__
            if not complete:
                truncated_groups.append(group)
        result = totals.result(start, end, clipped, truncated_groups)
        if failures:
            detail = "; ".join(f"{f.group}: {f.code}: {f.message}" for f in failures)
            raise ExitSourceError(
                f"{len(failures)} of {len(self.log_groups)} log groups unreadable: {detail}",
                code=failures[0].code,
                groups=tuple(f.group for f in failures),
                partial=result,
            ) from failures[0].__cause__
        return result

    def _read_group(self, group: str, start: float, end: float, totals: _Totals) -> bool:
        """Read every page of one group into ``totals``; False when max_pages ran out first."""
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, Any] = {
            "startTime": math.floor(start * 1000),
            "endTime": math.ceil(end * 1000),
        }
        if group.startswith("arn:"):
            request["logGroupIdentifier"] = group.removesuffix(":*")
        else:
            request["logGroupName"] = group
        if self.page_limit is not None:
            request["limit"] = self.page_limit
        pattern = self.pattern(group)
        if pattern:
            request["filterPattern"] = pattern
        for _ in range(self.max_pages):
            try:
                response = self._client.filter_log_events(**request)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code") or "ClientError")
                message = _short(str(error.get("Message") or exc))
                if code in _GROUP_ERRORS:
                    raise _GroupFailed(group, code, message) from exc
                raise _SourceFailed(group, code, message) from exc
            except BotoCoreError as exc:
                raise _SourceFailed(group, type(exc).__name__, _short(str(exc))) from exc
            totals.pages += 1
            # A page may be empty while nextToken goes on: FilterLogEvents searches a slice of
            # the streams per call. Only a missing token ends the group.
            for event in response.get("events") or ():
                totals.add(event, self.containers)
            token = response.get("nextToken")
            if not token:
                return True
            request["nextToken"] = token
        return False

    @property
    def memory_groups(self) -> tuple[str, ...]:
        """The configured groups that hold memory samples (Container Insights performance)."""
        return tuple(g for g in self.log_groups if is_container_insights_group(g))

    def pattern(self, group: str) -> str | None:
        """The filter pattern sent for ``group`` (None: none)."""
        if not self.server_filter:
            return None
        if is_container_insights_group(group):
            return CONTAINER_INSIGHTS_PATTERN
        return TEXT_PATTERN


class _Failure(Exception):
    def __init__(self, group: str, code: str, message: str) -> None:
        super().__init__(message)
        self.group = group
        self.code = code
        self.message = message


class _GroupFailed(_Failure):
    """One log group failed (missing, not allowed): the others are still read."""


class _SourceFailed(_Failure):
    """The service as a whole failed (throttled, unreachable, credentials): stop at once."""


@dataclass
class _Totals:
    evidence: dict[str, ExitEvidence] = field(default_factory=dict)
    memory: dict[str, MemorySample] = field(default_factory=dict)
    events_read: int = 0
    skipped: int = 0
    ignored: int = 0
    pages: int = 0

    def add(self, event: Any, containers: Sequence[str]) -> None:
        self.events_read += 1
        if not isinstance(event, dict):
            self.skipped += 1
            return
        raw_ts = event.get("timestamp")
        timestamp = (
            raw_ts / 1000.0
            if isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool)
            else None
        )
        stream = event.get("logStreamName")
        parsed = parse_message(
            event.get("message"),
            timestamp=timestamp,
            stream=stream if isinstance(stream, str) else None,
            containers=containers,
        )
        if parsed.format == Format.MALFORMED:
            self.skipped += max(1, parsed.skipped)
            return
        self.skipped += parsed.skipped
        if not parsed.evidence and not parsed.memory and not parsed.skipped:
            self.ignored += 1
        for item in parsed.evidence:
            # The same event can come twice (overlapping pages, the same rule feeding two groups,
            # a duplicate EventBridge delivery): the first copy stands.
            self.evidence.setdefault(item.event_id, item)
        for sample in parsed.memory:
            self.memory.setdefault(sample.event_id, sample)

    def result(
        self, start: float, end: float, clipped: bool, truncated_groups: Sequence[str]
    ) -> ExitRead:
        return ExitRead(
            evidence=tuple(sorted(self.evidence.values(), key=lambda e: (e.at, e.event_id))),
            memory=_with_task_hosts(self.memory.values(), self.evidence.values()),
            events_read=self.events_read,
            skipped=self.skipped,
            pages=self.pages,
            truncated=clipped or bool(truncated_groups),
            ignored=self.ignored,
            start=start,
            end=end,
            truncated_groups=tuple(truncated_groups),
        )


def _with_task_hosts(
    samples: Iterable[MemorySample], evidence: Iterable[ExitEvidence]
) -> tuple[MemorySample, ...]:
    """Samples oldest first; an ECS sample (known by its task id alone) also gets the addresses
    an ECS task event of the same read gives that task, so that it matches a worker named after
    its host (awsvpc: ``ip-10-0-1-5``)."""
    task_hosts: dict[str, tuple[str, ...]] = {}
    for item in evidence:
        if item.source == "ecs":
            for host in item.hosts:
                task_hosts[host] = tuple(dict.fromkeys((*task_hosts.get(host, ()), *item.hosts)))
    out = [
        replace(s, hosts=tuple(dict.fromkeys((*s.hosts, *task_hosts[s.hosts[0]]))))
        if s.source == "ecs" and s.hosts and s.hosts[0] in task_hosts
        else s
        for s in samples
    ]
    return tuple(sorted(out, key=lambda s: (s.at, s.event_id)))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
