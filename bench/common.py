"""What every benchmark shares: result rows, the one table, progress lines, small statistics, a
DynamoDB request meter, and the private services (redis-server, moto server) they run on.

Only the standard library is imported at module level: the cold-start benchmark imports this
module inside its measuring child process, after the imports it measures, and must not pay for
(or pre-load) anything else.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "oomcheck"
FUNCTION = ROOT / "functions" / "checker"
# The layer is installed editable in .venv; this keeps `python -m bench` working from a plain
# checkout too, the way bench_scan.py does.
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))

_T0 = time.monotonic()
# Lambda allocates CPU in proportion to memory, one full vCPU at 1,769 MB: a 256 MB function
# (template.yaml's size for a watch; checks get 1536 MB) gets about 1/6.9 of one. CPU-bound
# figures measured here on a full core are multiplied by this for a Lambda estimate at the
# smallest size the template uses.
LAMBDA_MEMORY_MB = 256
LAMBDA_CPU_FACTOR = 1769 / LAMBDA_MEMORY_MB


# --------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table: a figure, what it is compared with in the same run, the target."""

    what: str
    figure: str
    reference: str
    target: str
    met: bool | None  # None: informational, no target applies

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("yes" if self.met else "NO")


@dataclass
class Result:
    """What one benchmark hands back to ``python -m bench``."""

    name: str
    tag: str = ""  # row numbers in the table: C1, L2... (defaults to the name's first letter)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Measured values other benchmarks build on (bench_cost uses bench_check's and bench_fleet's).
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, what: str, figure: str, reference: str, target: str, met: bool | None) -> None:
        self.rows.append(Row(what, figure, reference, target, met))


@dataclass
class Phases:
    """Wall time spent in each part of one run (wrapped around our own instances only)."""

    spent: dict[str, float] = field(default_factory=dict)

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        inner = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(obj, attr, timed)


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the table."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


def _wrap(text: str, width: int) -> list[str]:
    words = text.split()
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def render_table(results: Sequence[Result], header: str) -> str:
    """One table for every benchmark; long cells wrap inside their column, notes follow."""
    columns: tuple[tuple[str, int], ...] = (
        ("#", 4),
        ("what", 40),
        ("figure", 30),
        ("reference, same run", 34),
        ("target", 18),
        ("met?", 4),
    )
    out = [header, ""]
    line = " ".join(f"{name:<{width}}" for name, width in columns)
    out += [line, "-" * len(line)]
    for result in results:
        out.append(f"[{result.name}]  ({result.seconds:.0f} s)")
        for index, row in enumerate(result.rows, 1):
            cells = [
                [f"{result.tag or result.name[:1].upper()}{index}"],
                _wrap(row.what, columns[1][1]),
                _wrap(row.figure, columns[2][1]),
                _wrap(row.reference, columns[3][1]),
                _wrap(row.target, columns[4][1]),
                [row.verdict],
            ]
            height = max(len(c) for c in cells)
            for i in range(height):
                out.append(
                    " ".join(
                        f"{(cell[i] if i < len(cell) else ''):<{width}}"
                        for cell, (_, width) in zip(cells, columns, strict=True)
                    ).rstrip()
                )
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        out += ["", "Notes"]
        for name, note in notes:
            wrapped = _wrap(note, 110)
            out.append(f"- [{name}] {wrapped[0]}")
            out += [f"    {rest}" for rest in wrapped[1:]]
    return "\n".join(out)


# --------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: with few samples p95 is simply the largest, no interpolation
    that would pretend to know more than was measured."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM; ru_maxrss would carry a parent's across exec)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, value) of one call."""
    cpu = time.process_time()
    wall = time.perf_counter()
    value = call()
    return time.perf_counter() - wall, time.process_time() - cpu, value


# ----------------------------------------------------------------------------- DynamoDB meter


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB bills for one attribute value (S, N, B, BOOL, NULL, M, L), per the
    documented item-size rules; numbers count about one byte per two significant digits."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        digits = str(raw).lstrip("-").replace(".", "").strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in raw)
    return len(json.dumps(raw))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


@dataclass
class DynamoCall:
    operation: str
    write_units: int = 0
    read_units: int = 0
    item_writes: int = 0  # Put/Delete actions inside transactions (not the lease condition)
    actions: int = 0
    request_item_bytes: int = 0


class DynamoMeter:
    """Records every DynamoDB call a boto3 client makes, with the on-demand request units it
    would be billed: 1 WRU per KB written (UpdateItem), 2 per KB per item in TransactWriteItems
    (a ConditionCheck counts as a 2-unit write), 1 RRU per 4 KB of a strongly consistent Query
    page. Hooks botocore's own events, so nothing in the store is changed to count."""

    def __init__(self, client: Any) -> None:
        self.calls: list[DynamoCall] = []
        self._lease_bytes = 200
        events = client.meta.events
        events.register("provide-client-params.dynamodb.*", self._request)
        events.register("after-call.dynamodb.Query", self._query_reply)

    def _request(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        call = DynamoCall(name)
        if name == "UpdateItem":
            meta = params.get("ExpressionAttributeValues", {}).get(":meta")
            if meta is not None:
                self._lease_bytes = 120 + attribute_size(meta)
            call.write_units = max(1, math.ceil(self._lease_bytes / 1024))
        elif name == "TransactWriteItems":
            for action in params.get("TransactItems", ()):
                call.actions += 1
                if "Put" in action:
                    size = item_size(action["Put"]["Item"])
                    call.request_item_bytes += size
                    call.write_units += 2 * max(1, math.ceil(size / 1024))
                    call.item_writes += 1
                elif "Delete" in action:
                    call.write_units += 2
                    call.item_writes += 1
                else:
                    call.write_units += 2
        self.calls.append(call)

    def _query_reply(self, parsed: dict[str, Any], **_: Any) -> None:
        size = sum(item_size(item) for item in parsed.get("Items", ()))
        for call in reversed(self.calls):
            if call.operation == "Query":
                call.read_units = max(1, math.ceil(size / 4096))
                break

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> dict[str, int]:
        calls = self.calls[mark:]
        return {
            "calls": len(calls),
            "transactions": sum(1 for c in calls if c.operation == "TransactWriteItems"),
            "update_items": sum(1 for c in calls if c.operation == "UpdateItem"),
            "queries": sum(1 for c in calls if c.operation == "Query"),
            "item_writes": sum(c.item_writes for c in calls),
            "max_actions": max((c.actions for c in calls), default=0),
            "max_tx_bytes": max((c.request_item_bytes for c in calls), default=0),
            "wru": sum(c.write_units for c in calls),
            "rru": sum(c.read_units for c in calls),
        }


# ---------------------------------------------------------------------------------- services


class CountingPublisher:
    """Stands in for SNS where only the number of alerts matters."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def describe(self) -> str:
        return "bench"

    def publish(self, message: Any) -> str:
        self.messages.append(message)
        return f"m-{len(self.messages)}"


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on 127.0.0.1 (never the shared 6379); yields its base URL
    without a database number."""
    from oomcheck.demo import services

    server = services.start_redis()
    try:
        yield server.url.rsplit("/", 1)[0]
    finally:
        server.stop()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 with dummy credentials, reached through AWS_ENDPOINT_URL (set
    in this process for the block, and restored after)."""
    from oomcheck.demo import services

    saved = dict(os.environ)
    server = None
    try:
        services.fake_aws_credentials()
        server = services.start_moto()
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        yield server.endpoint
    finally:
        if server is not None:
            server.stop()
        os.environ.clear()
        os.environ.update(saved)


# The part of a Lambda context the handler reads, as source for the benches' measuring children
# (they run as `python -c`, with only sys/os/time/json imported before the timed import).
CHILD_CONTEXT = r"""
from types import SimpleNamespace
context = SimpleNamespace(
    function_name="oomcheck-checker", function_version="$LATEST",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:oomcheck-checker",
    memory_limit_in_mb=256, aws_request_id=f"bench-{os.getpid()}",
    log_group_name="/aws/lambda/oomcheck-checker", log_stream_name="bench",
    get_remaining_time_in_millis=lambda: 30000)
"""
