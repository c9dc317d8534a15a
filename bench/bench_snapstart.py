"""SnapStart, emulated at a 256 MB function's CPU share: a restore -> SNS publish.

Each sample is a child process in the CPU cgroup (bench_cold's) that does the init untimed:
imports the handler, runs the before-snapshot hooks (oomcheck.entry.snapshot: the clients built,
the connections closed). Then it takes a timestamp and ``os.fork()``s: the forked process runs
the after-restore hooks and the handler on the SQS batch announcing a worker just SIGKILLed
(bench_cold's ``_one_death``), and reports fork -> handler return, which comes after the SNS
publish (the handler's "run finished" line must count a published alert).

What this cannot include: Lambda's own restore (loading the snapshot's memory, resuming the VM),
which happens before the after-restore hooks and is not measurable here. AWS documents no
figure for it; the REPORT line of a restored invocation shows it as "Restore Duration". Beside
it, the plain cold path (bench_cold's process start -> publish) is measured in the same run.

The cost row prices SnapStart for this function from AWS's published Python/.NET SnapStart
prices (us-east-1): a cache charge per GB-s for as long as each SnapStart version exists
(minimum 3 hours) and a restore charge per GB restored.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from bench.bench_cold import (
    Setup,
    Variant,
    _cgroup,
    _one_death,
    _spawn,
    cpu_cgroup_available,
    interpreter,
    joining,
    prepared,
    share_of,
)
from bench.common import (
    CHILD_CONTEXT,
    FUNCTION,
    ROOT,
    Result,
    median,
    ms,
)
from bench.common import progress as _progress

TARGET_S = 1.5
MEMORY_MB = 256
# AWS Lambda pricing, SnapStart for Python and .NET, us-east-1 (aws.amazon.com/lambda/pricing)
CACHE_PER_GB_S = 0.0000015046
RESTORE_PER_GB = 0.0001397998
SECONDS_PER_MONTH = 30 * 24 * 3600

CHILD = (
    r"""
import json, os, sys, time
func_dir, layer_dir, event_path, out_path = sys.argv[1:5]
sys.path[:0] = [func_dir, layer_dir]
import app
from oomcheck.entry import snapshot
"""
    + CHILD_CONTEXT
    + r"""
snapshot.before_snapshot(lambda: app._get_deps(snapshot.INIT_CONTEXT))
event = json.load(open(event_path))
forked = time.time()
pid = os.fork()
if pid == 0:
    try:
        t0 = time.perf_counter(); c0 = time.process_time()
        snapshot.after_restore(lambda: app._deps)
        hooks = time.perf_counter() - t0
        body = app.handler(event, context)
        out = {"total_s": time.time() - forked, "hooks_s": hooks,
               "cpu_s": time.process_time() - c0, "body": body}
        json.dump(out, open(out_path, "w"))
        sys.stdout.flush()
    finally:
        os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
)


def progress(message: str) -> None:
    _progress(f"snapstart: {message}")


def _restore(setup: Setup, event: Path, share: float | None) -> dict[str, Any]:
    script = setup.workdir / "restore_child.py"
    script.write_text(CHILD)
    out = setup.workdir / f"restore-{uuid.uuid4().hex[:8]}.json"
    env = {**os.environ, **setup.env}
    env.pop("PYTHONPATH", None)
    python, layer = interpreter(setup)  # as bench_cold's children
    argv = [*python, str(script), str(FUNCTION), layer, str(event), str(out)]
    with _cgroup(share) as group:
        done = subprocess.run(
            [*joining(group), *argv],
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"restore child failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    finished = [json.loads(line) for line in done.stdout.splitlines() if '"run finished"' in line]
    if not finished or not finished[-1].get("stats", {}).get("alerts_published"):
        raise RuntimeError(f"restored child published nothing: {finished[-1:]}")
    return result


def run(quick: bool = False) -> Result:
    result = Result("snapstart", tag="N")
    runs = 2 if quick else 3
    available, how = cpu_cgroup_available()
    share = share_of(MEMORY_MB) if available else None
    restored: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    with prepared("oomcheck-bench-snap-") as (setup, shape):
        for n in range(runs):
            # interleaved, a fresh death (and a state target of its own) for each sample
            event, target = _one_death(setup, 2 * n)
            setup.env["OOMCHECK_TARGET"] = target
            restored.append(_restore(setup, event, share))
            event, target = _one_death(setup, 2 * n + 1)
            with _cgroup(share) as group:
                cold.append(_spawn(setup, event, target, cgroup=group, variant=Variant()))
            progress(
                f"run {n + 1}/{runs}: restored {ms(restored[-1]['total_s'])}, "
                f"cold {ms(cold[-1]['total_s'])}"
            )
    _rows(result, restored, cold, available=available, how=how)
    result.notes.append(f"snapstart: the children run {shape}")
    return result


def _rows(
    result: Result,
    restored: list[dict[str, Any]],
    cold: list[dict[str, Any]],
    *,
    available: bool,
    how: str,
) -> None:
    total = median([r["total_s"] for r in restored])
    plain = median([r["total_s"] for r in cold])
    where = f"{share_of(MEMORY_MB):.1%} of a core, {how}" if available else "full speed (" + how
    result.add(
        f"SnapStart, emulated restore at 256 MB ({where}): after-restore hooks + handler on the "
        "SQS batch -> SNS publish; Lambda's own snapshot load NOT included (not measurable "
        "here; AWS documents no figure: see Restore Duration in the REPORT line)",
        f"{ms(total)} (hooks {ms(median([r['hooks_s'] for r in restored]))}, CPU "
        f"{ms(median([r['cpu_s'] for r in restored]))}; {len(restored)} runs)",
        f"plain cold path in the same run (process start -> publish): {ms(plain)}",
        "<= 1.5 s",
        total <= TARGET_S,
    )
    gb = MEMORY_MB / 1024
    cache_month = CACHE_PER_GB_S * gb * SECONDS_PER_MONTH
    # a restore per new execution environment: at most one per tick if every tick were cold
    restores_month = 43_200
    result.add(
        "SnapStart cost at 256 MB, us-east-1 (Python SnapStart prices: cache $0.0000015046 per "
        "GB-s per version, restore $0.0001397998 per GB)",
        f"${cache_month:.2f} a month per cached version; restores ${RESTORE_PER_GB * gb:.7f} "
        f"each, ${RESTORE_PER_GB * gb * restores_month:.2f} a month if all 43,200 ticks restored",
        "retained versions each keep their cache charge until deleted: make prune-versions",
        "(informational)",
        None,
    )
    result.facts["snapstart_restore_256_s"] = total
