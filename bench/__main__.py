"""``python -m bench`` (``make bench``): every benchmark, then one table of figures.

    python -m bench                      everything (about 10 minutes on 2 cores)
    python -m bench --only check,fleet   some of: check, latency, events, cold, snapstart, fleet,
                                         scan, queues, beat, oncall, sqs, metrics, cost
    python -m bench --quick              smaller N, for development

Progress goes to stderr, the table to stdout. Each row: what, the figure, the reference it is
measured against in the same run, the target, and whether it was met. A missed target is a
figure, not a crash: the exit status is 1 only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.common import ROOT, Result, progress, render_table

ORDER = (
    "check",
    "latency",
    "events",
    "cold",
    "snapstart",
    "fleet",
    "scan",
    "queues",
    "beat",
    "oncall",
    "sqs",
    "metrics",
    "cost",
)
SCAN_TIMEOUT_S = 900.0


# ------------------------------------------------------------------------------- bench_scan.py
# bench_scan.py belongs to the result-backend work and prints its own table; it is run as it is
# and its lines are read back. Its output format is the interface, so the patterns below fail
# loudly (a row saying so) rather than guess.

_OURS = re.compile(
    r"^\s*(?P<keys>[\d,]+)\s+(?P<mode>ours|pipelined)\s+(?P<bare>[\d.]+)\s+(?P<secs>[\d.]+)\s+"
    r"(?P<ratio>[\d.]+)x\s+(?P<rss>[\d.]+)\s+[\d,]+\s+(?P<started>\d+)\s+"
    r"\(paired runs (?P<lo>[\d.]+)-(?P<hi>[\d.]+)x\)"
)
_BARE = re.compile(r"^\s*(?P<keys>[\d,]+)\s+bare\s+(?P<secs>[\d.]+)\s+(?P<rss>[\d.]+)\s+[\d,]+\s*$")
_NAIVE = re.compile(
    r"^\s*(?P<keys>[\d,]+)\s+scan\+mget\s+[\d.]+\s+(?P<secs>[\d.]+)\s+(?P<ratio>[\d.]+)x\s+"
    r"(?P<rss>[\d.]+)"
)
_HUGE = re.compile(
    r"bare (?P<bare>[\d.]+) s / (?P<bare_rss>[\d.]+) MB; ours (?P<secs>[\d.]+) s "
    r"\((?P<ratio>[\d.]+)x\) / (?P<rss>[\d.]+) MB, keys (?P<keys>[\d,]+) of (?P<total>[\d,]+), "
    r"started (?P<started>\d+), skipped (?P<skipped>\d+); scan\+mget (?P<naive>[\d.]+) s / "
    r"(?P<naive_rss>[\d.]+) MB"
)
_BUDGET = re.compile(
    r"budget (?P<budget>[\d,]+): (?P<runs>\d+) runs covered (?P<keys>[\d,]+) keys; median run "
    r"(?P<per_run>[\d,]+) keys in (?P<secs>[\d.]+) s \((?P<rate>[\d,]+) keys/s\), "
    r"RSS (?P<rss>[\d.]+) MB"
)


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def run_scan(quick: bool) -> Result:
    result = Result("scan")
    argv = [sys.executable, str(ROOT / "bench" / "bench_scan.py"), *(["--quick"] if quick else [])]
    progress(f"scan: {' '.join(argv[1:])} (its own output follows, prefixed 'scan|')")
    lines: list[str] = []
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    # Its own process group: if this run is cut short, the group (its measuring children and its
    # redis-server) is killed with it, since bench_scan.py's own cleanup would not run.
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                lines.append(line.rstrip("\n"))
                print(f"scan| {line}", end="", file=sys.stderr, flush=True)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bench_scan.py ran past {SCAN_TIMEOUT_S:.0f} s")
            code = child.wait(timeout=60)
        finally:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
    if code != 0:
        raise RuntimeError(f"bench_scan.py exited with {code}: {' | '.join(lines[-5:])}")

    ours: dict[tuple[int, str], dict[str, str]] = {}
    bare: dict[int, dict[str, str]] = {}
    naive: dict[int, dict[str, str]] = {}
    huge = budget = None
    for line in lines:
        if m := _OURS.match(line):
            ours[(int(_num(m["keys"])), m["mode"])] = m.groupdict()
        elif m := _BARE.match(line):
            bare[int(_num(m["keys"]))] = m.groupdict()
        elif m := _NAIVE.match(line):
            naive[int(_num(m["keys"]))] = m.groupdict()
        elif m := _HUGE.search(line):
            huge = m.groupdict()
        elif m := _BUDGET.search(line):
            budget = m.groupdict()
    if not ours or not bare:
        raise RuntimeError("could not read bench_scan.py's table (its output format changed?)")
    size = max(bare)
    best, fallback, floor = ours.get((size, "ours")), ours.get((size, "pipelined")), bare[size]
    small = min(bare)
    runs = "1 run" if quick else "fastest of 5, paired runs"
    if best is not None:
        ratio = _num(best["ratio"])
        result.add(
            f"result scan, {size:,} keys ({runs}, fresh process each)",
            f"{_num(best['secs']):.2f} s = {ratio:.2f}x (paired {best['lo']}-{best['hi']}x)",
            f"bare SCAN loop {_num(floor['secs']):.2f} s, same server and keys",
            "<= 2.0x" + (" (1M keys)" if size >= 1_000_000 else " (target is at 1M)"),
            ratio <= 2.0 if size >= 1_000_000 else None,
        )
        small_rss = ours.get((small, "ours"), best)["rss"]
        rss = _num(best["rss"])
        result.add(
            f"result scan peak RSS, {size:,} keys",
            f"{rss:.1f} MB ({small:,} keys: {_num(small_rss):.1f} MB)",
            f"bare SCAN process {_num(floor['rss']):.1f} MB",
            "< 80 MB, flat in keys",
            rss < 80 and rss - _num(small_rss) < 10,
        )
    if fallback is not None:
        ratio = _num(fallback["ratio"])
        result.add(
            f"result scan without Lua (ACL denies scripting), {size:,} keys",
            f"{_num(fallback['secs']):.2f} s = {ratio:.2f}x",
            f"bare SCAN loop {_num(floor['secs']):.2f} s",
            "<= 2.0x" if size >= 1_000_000 else "(target is at 1M)",
            ratio <= 2.0 if size >= 1_000_000 else None,
        )
    if small in naive:
        result.add(
            f"naive SCAN+MGET+json.loads, {small:,} keys (what the scan avoids)",
            f"{_num(naive[small]['secs']):.2f} s = {_num(naive[small]['ratio']):.2f}x",
            f"ours {_num(ours[(small, 'ours')]['secs']):.2f} s" if (small, "ours") in ours else "",
            "(informational)",
            None,
        )
    if huge is not None:
        rss = _num(huge["rss"])
        result.add(
            "30 values of 10 MB among 100k keys: scan peak RSS",
            f"{rss:.1f} MB; {huge['skipped']} skipped, {huge['started']} STARTED found",
            f"SCAN+MGET {_num(huge['naive_rss']):.1f} MB; "
            f"bare SCAN {_num(huge['bare_rss']):.1f} MB",
            "< 80 MB",
            rss < 80,
        )
    if budget is not None:
        result.add(
            f"budgeted scan ({budget['budget']} keys per run, cursor resumed)",
            f"{budget['per_run']} keys in {_num(budget['secs']):.2f} s per run",
            f"{budget['runs']} runs covered {budget['keys']} keys",
            "(informational)",
            None,
        )
    result.notes.append(
        "scan: rows read from bench/bench_scan.py's printed table (owned by the result-backend "
        "work; its full output is on stderr)."
    )
    return result


# ------------------------------------------------------------------------------------- driver


def _header(quick: bool) -> str:
    try:
        redis_server = (
            subprocess.run(
                ["redis-server", "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        redis_server = "?"
    return (
        f"oomcheck benchmarks, {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC"
        f"{' (--quick: smaller N, not the reference figures)' if quick else ''}\n"
        f"{platform.node()}: {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, redis-server {redis_server}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="smaller N, for development")
    args = parser.parse_args(argv)
    chosen = ORDER if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = sorted(set(chosen) - set(ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")

    # A SIGTERM (a timeout, a CI cancel) must unwind like Ctrl-C, so that every finally block
    # stops its workers, servers and cgroups.
    def interrupted(signum: int, _: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)

    from bench import (
        bench_beat,
        bench_check,
        bench_cold,
        bench_cost,
        bench_events,
        bench_fleet,
        bench_latency,
        bench_metrics,
        bench_oncall,
        bench_queues_memory,
        bench_snapstart,
        bench_sqs,
    )

    facts: dict[str, Any] = {}
    runners: dict[str, Callable[[], Result]] = {
        "check": lambda: bench_check.run(args.quick),
        "latency": lambda: bench_latency.run(args.quick),
        "events": lambda: bench_events.run(args.quick, facts),
        "cold": lambda: bench_cold.run(args.quick),
        "snapstart": lambda: bench_snapstart.run(args.quick),
        "fleet": lambda: bench_fleet.run(args.quick),
        "scan": lambda: run_scan(args.quick),
        "queues": lambda: bench_queues_memory.run(args.quick),
        "beat": lambda: bench_beat.run(args.quick),
        "oncall": lambda: bench_oncall.run(args.quick),
        "sqs": lambda: bench_sqs.run(args.quick),
        "metrics": lambda: bench_metrics.run(args.quick),
        "cost": lambda: bench_cost.run(args.quick, facts),
    }
    started = time.monotonic()
    results: list[Result] = []
    failed = 0
    for name in ORDER:
        if name not in chosen:
            continue
        progress(f"=== {name}")
        t0 = time.monotonic()
        try:
            result = runners[name]()
        except Exception as exc:  # one benchmark failing must not hide the others' figures
            failed += 1
            traceback.print_exc()
            result = Result(name)
            result.add(
                f"{name} benchmark could not run",
                f"{type(exc).__name__}",
                str(exc)[:200],
                "-",
                False,
            )
        result.seconds = time.monotonic() - t0
        facts.update(result.facts)
        results.append(result)
        progress(f"=== {name} done in {result.seconds:.0f} s")
    total = time.monotonic() - started
    missed = sum(1 for r in results for row in r.rows if row.met is False)
    print(render_table(results, _header(args.quick)))
    print(
        f"\nbench total {total:.0f} s ({total / 60:.1f} min); "
        f"{missed} target(s) missed{f', {failed} benchmark(s) failed' if failed else ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
