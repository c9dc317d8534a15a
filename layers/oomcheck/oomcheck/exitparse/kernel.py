"""Kernel OOM-killer lines shipped by the CloudWatch agent or Fluent Bit: syslog lines
(``Nov 24 13:50:29 ip-10-0-1-5 kernel: [12345.678] Memory cgroup out of memory: Killed process
4321 (celery) total-vm:...``), RFC 3339 syslog, RFC 5424, bare dmesg lines, and journald JSON
(``MESSAGE``, ``_HOSTNAME``, ``__REALTIME_TIMESTAMP``)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

from oomcheck.exitparse.common import (
    EXIT_SIGKILL,
    MALFORMED,
    MAX_MESSAGE_CHARS,
    MAX_PID,
    OTHER,
    Format,
    Parsed,
    bounded_time,
    clean_text,
    host_name,
    id_host,
    int_or_none,
    iso_time,
)
from oomcheck.model import Cause, ExitEvidence

__all__ = ["parse_journal_record", "parse_kernel_line"]

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
        return MALFORMED
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
            line_time = iso_time(match["ts"])
    text = _UPTIME.sub("", text)
    kill = _OOM_KILL.search(text)
    if kill is None:
        return Parsed(Format.KERNEL if "Killed process" in text else Format.OTHER)
    if kill["kind"] is None and "total-vm:" not in kill["tail"]:
        # Not the kernel's wording: some application's log line that mentions a killed process.
        return OTHER
    pid = int_or_none(int(kill["pid"]), low=1, high=MAX_PID)
    at = bounded_time(line_time, timestamp) if line_time is not None else timestamp
    if pid is None or at is None or not math.isfinite(at):
        return Parsed(Format.KERNEL, skipped=1)
    where = host_name(host) or host_name(line_host) or host_name(stream)
    comm = clean_text(kill["comm"], 16)
    core = " ".join(kill.group(0)[kill.start("pid") - kill.start() :].split())
    if "total-vm:" not in core:
        core += f" @{int(at)}"
    digest = hashlib.sha256(core.encode("utf-8", "replace")).hexdigest()[:12]
    host_part = id_host(where) if where else "-"
    rss = _RSS.search(kill["tail"])
    rss_text = f", anon-rss {int(rss[1]) // 1024} MiB" if rss else ""
    kind = f"{kill['kind']}: " if kill["kind"] else ""
    evidence = ExitEvidence(
        source="kernel",
        event_id=f"kernel:{host_part}:{pid}:{digest}",
        at=at,
        cause=Cause.OOM_KILLED,
        exit_code=EXIT_SIGKILL,
        text=clean_text(
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
            return MALFORMED
        message = bytes(message).decode("utf-8", "replace")
    if not isinstance(message, str):
        return OTHER
    if "Killed process" not in message:
        return OTHER
    host: str | None = None
    for key in ("_HOSTNAME", "HOSTNAME", "hostname", "host"):
        value = record.get(key)
        if isinstance(value, str):
            host = value
            break
    journal_time: float | None = None
    for key in ("_SOURCE_REALTIME_TIMESTAMP", "__REALTIME_TIMESTAMP", "SOURCE_REALTIME_TIMESTAMP"):
        micros = int_or_none(record.get(key), low=0, high=2**62)
        if micros is not None:
            journal_time = micros / 1e6
            break
    at = bounded_time(journal_time, timestamp) if journal_time is not None else timestamp
    return parse_kernel_line(message, timestamp=at, stream=stream, host=host)
