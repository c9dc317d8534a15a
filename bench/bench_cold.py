"""The cold event path at Lambda's CPU share: process start -> SNS publish.

Each sample is a fresh interpreter whose first invocation is the SQS batch carrying the ECS
OutOfMemoryError event of a worker that was just SIGKILLed (a real worker on a private
redis-server, on the roster of a state target of its own, so every sample publishes an alert).
The child runs the real handler (functions/checker/app.py, URLs as ssm: references, DynamoDB,
SNS and CloudWatch Logs on a moto server). The figure is from just before the process is spawned
to the handler's return, which comes after the publish (the child checks that it published).

CPU share: a 256 MB function gets 256/1769 of a vCPU (FACTS.md); the child runs in a CPU cgroup
(v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, v2 ``cpu.max``) whose quota is that share of one
core. Without a writable CPU cgroup the rows say so and only the full-speed figures are taken.

Levers, measured one at a time in the same run, each against the variant without it (the
function and layer exported from git at the revision before it, compiled, as the layer now ships):
- bytecode: the layer as it shipped before (``--no-compile`` and ``__pycache__`` stripped; /opt
  is read-only, so every cold start compiled every module), emulated with an empty, read-only
  ``PYTHONPYCACHEPREFIX``, vs compiled;
- presence first: the check an event starts no longer waits the inspect timeout for the dead;
- one boto3 session for every client, and ssm: references read with boto3 on it;
- memory: the same path at 512 and 1024 MB's share, for the cost row.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CHILD_CONTEXT,
    FUNCTION,
    LAYER,
    ROOT,
    Result,
    median,
    moto_server,
    ms,
    private_redis,
)
from bench.common import progress as _progress

FULL_VCPU_MB = 1769
PERIOD_US = 100_000
TARGET_S = 1.5
# the memory settings measured beside 256 MB, for the default's choice (bench_cost prices them)
MEMORY_ROWS = (512, 768, 1024, 1769)
# template.yaml's FunctionMemory "auto" for checks (tests/template/test_memory.py): the row the
# target applies to
DEFAULT_MB = 1536
CPU_ROOT_V1 = Path("/sys/fs/cgroup/cpu")
CPU_ROOT_V2 = Path("/sys/fs/cgroup")
# The revisions the levers are measured at: main before this work; the check that asks presence
# first; one boto3 session and boto3 for ssm: references (this file's settings.py split them).
BEFORE = "158f0a0"
PRESENCE_FIRST = "3319282"
COLD_LEVERS = "a444c01"
SETTINGS = "layers/oomcheck/oomcheck/config/settings.py"
# x86 Lambda price per GB-s (FACTS.md); a scheduled check every minute is 43,200 a month
PRICE_GB_S = 0.0000166667

CHILD = (
    r"""
import json, os, sys, time
t_start = float(sys.argv[5])
func_dir, layer_path, event_path, out_path = sys.argv[1:5]
sys.path[:0] = [func_dir, *layer_path.split(os.pathsep)]
t0 = time.perf_counter(); c0 = time.process_time()
import app
"""
    + CHILD_CONTEXT
    + r"""
if os.environ.get("BENCH_INIT"):
    app._get_deps(context)  # the clients built during init, as SnapStart would snapshot them
imported = time.perf_counter() - t0
event = json.load(open(event_path))
body = app.handler(event, context)  # its log lines go to the pipe, read by the parent
done = time.time()
out = {"total_s": done - t_start, "import_s": imported, "cpu_s": time.process_time() - c0,
       "handler_s": time.perf_counter() - t0 - imported, "body": body}
json.dump(out, open(out_path, "w"))
"""
)


def progress(message: str) -> None:
    _progress(f"cold: {message}")


@dataclass(frozen=True)
class CpuCgroup:
    """A CPU cgroup of our own with a quota; processes join it by writing their pid."""

    path: Path
    v2: bool

    @staticmethod
    def create(share: float) -> CpuCgroup:
        quota = int(share * PERIOD_US)
        name = f"oomcheck-bench-cold-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if (CPU_ROOT_V1 / "cpu.cfs_quota_us").exists():
            path = CPU_ROOT_V1 / name
            path.mkdir()
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
            return CpuCgroup(path, v2=False)
        path = CPU_ROOT_V2 / name
        path.mkdir()
        (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        return CpuCgroup(path, v2=True)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def joining(group: CpuCgroup | None) -> list[str]:
    """The command prefix that puts a child in ``group`` before it execs, so the interpreter's
    own start is throttled too (none without a group)."""
    if group is None:
        return []
    return ["sh", "-c", f'echo $$ > "{group.path / "cgroup.procs"}" && exec "$@"', "sh"]


def interpreter(setup: Setup) -> tuple[list[str], str]:
    """(the children's interpreter command, their layer's sys.path entries): the runtime's Python
    in isolated mode (-I -S: the layer and the function only, PYTHON* variables ignored) on the
    layer built from the lock, else this interpreter on the development tree."""
    if setup.layer is None:
        return [sys.executable], str(LAYER)
    return [str(setup.python), "-I", "-S"], str(setup.layer)


def cpu_cgroup_available() -> tuple[bool, str]:
    try:
        group = CpuCgroup.create(1.0)
    except OSError as exc:
        return False, f"no writable CPU cgroup ({type(exc).__name__}: {exc})"
    group.remove()
    return True, "CPU cgroup v2 cpu.max" if group.v2 else "CPU cgroup v1 cfs quota"


def share_of(memory_mb: int) -> float:
    return min(1.0, memory_mb / FULL_VCPU_MB)


@dataclass
class Setup:
    broker: str
    backend: str
    env: dict[str, str]
    app: Any
    workdir: Path
    # The interpreter the children run and the layer built from the lock for it (None: this
    # interpreter with the development virtualenv's packages)
    python: Path | None = None
    layer: Path | None = None


def runtime(workdir: Path) -> tuple[Path | None, Path | None, str]:
    """(interpreter, built layer, how): what ships, as Lambda runs it: the runtime's Python in
    isolated mode seeing only the layer built from the lock (tests/layer/build.py); the
    development virtualenv when the layer cannot be built here."""
    from tests.layer.build import build_layer, interpreter, unbuildable, version

    why = unbuildable()
    if why:
        return None, None, f"the development virtualenv ({why})"
    python = interpreter()
    out = workdir / "layer"
    out.mkdir()
    layer = build_layer(out, python)
    return python, layer, f"python {version(python)} -I -S on the layer built from the lock"


def _one_death(setup: Setup, index: int) -> tuple[Path, str]:
    """A worker on the roster of a state target of its own, SIGKILLed; the SQS batch announcing
    it, written to a file. Returns the event file and the target."""
    from bench.bench_events import _context, _event_for
    from oomcheck.demo.arrivals import sqs_batch
    from oomcheck.demo.workers import WorkerProcess

    target = f"bench-cold-{index}-{uuid.uuid4().hex[:4]}"
    os.environ["OOMCHECK_TARGET"] = target
    app = setup.app
    if getattr(app, "_deps", None) is not None and app._deps.inspector is not None:
        app._deps.inspector.close()
    app._deps = None
    name, event = _event_for(100 + index)
    worker = WorkerProcess(
        name,
        setup.broker,
        setup.backend,
        concurrency=1,
        log_path=str(setup.workdir / f"{name}.log"),
    )
    try:
        worker.start()
        app.handler({"mode": "check"}, _context())  # the target's first run: clients
        worker.wait_ready(app._deps.inspector.app.control)
        app.handler({"mode": "check"}, _context())  # discovery: the worker is on the roster
        worker.kill(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.stop()
    path = setup.workdir / f"event-{index}.json"
    path.write_text(json.dumps(sqs_batch([event], sent_at=time.time())))
    return path, target


@contextlib.contextmanager
def prepared(prefix: str) -> Iterator[tuple[Setup, str]]:
    """(the setup the cold children run against, how they run): a private redis-server, a moto
    server with the stack's resources, their environment in this process (restored after), the
    layer built into a scratch folder (removed after)."""
    from bench.bench_events import _environment, _load_app

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    saved = dict(os.environ)
    try:
        with private_redis() as base, moto_server():
            broker, backend = f"{base}/1", f"{base}/2"
            env = _environment(broker, backend)
            os.environ.update(env)
            python, layer, shape = runtime(workdir)
            yield Setup(broker, backend, env, _load_app(), workdir, python, layer), shape
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Variant:
    """What one cold sample runs: the function and layer at a revision (None: this checkout),
    with some files taken from another revision, at a CPU share (None: full speed), with extra
    environment."""

    rev: str | None = None
    share: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    files_from: tuple[tuple[str, str], ...] = ()  # (path, revision)
    flags: tuple[str, ...] = ()  # the interpreter's own options


def _tree(setup: Setup, variant: Variant) -> tuple[Path, str]:
    """(function dir, the layer's sys.path entries) of the variant's revision: its own oomcheck,
    exported once and compiled by the children's interpreter (so its bytecode exists, as in the
    layer; a no-bytecode variant hides it with its flags), before the built layer's packages."""
    base = [str(setup.layer)] if setup.layer else []
    if variant.rev is None:
        return FUNCTION, os.pathsep.join(base or [str(LAYER)])
    key = "-".join([variant.rev, *(f"{p.rsplit('/', 1)[-1]}@{r}" for p, r in variant.files_from)])
    where = setup.workdir / f"tree-{key}"
    if not where.exists():
        where.mkdir()
        archive = subprocess.run(
            ["git", "archive", variant.rev, "layers/oomcheck/oomcheck", "functions/checker"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True, timeout=60)
        for path, rev in variant.files_from:
            text = subprocess.run(
                ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            (where / path).write_bytes(text)
        python = str(setup.python or sys.executable)
        subprocess.run([python, "-m", "compileall", "-q", str(where)], check=True, timeout=120)
    own = str(where / "layers" / "oomcheck")
    return where / "functions" / "checker", os.pathsep.join([own, *(base or [str(LAYER)])])


def _spawn(
    setup: Setup, event: Path, target: str, *, cgroup: CpuCgroup | None, variant: Variant
) -> dict[str, Any]:
    script = setup.workdir / "child.py"
    script.write_text(CHILD)
    out = setup.workdir / f"cold-{uuid.uuid4().hex[:8]}.json"
    env = {**os.environ, **setup.env, "OOMCHECK_TARGET": target, **dict(variant.env)}
    env.pop("PYTHONPATH", None)
    function, layer = _tree(setup, variant)
    python, _ = interpreter(setup)
    argv = [*python, *variant.flags, str(script), str(function), layer, str(event), str(out)]
    started = time.time()
    done = subprocess.run(
        [*joining(cgroup), *argv, str(started)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"cold child failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    finished = [json.loads(line) for line in done.stdout.splitlines() if '"run finished"' in line]
    stats = finished[-1].get("stats", {}) if finished else {}
    if not stats.get("alerts_published"):
        raise RuntimeError(f"cold child published nothing: {stats}")
    return result


@contextlib.contextmanager
def _cgroup(share: float | None) -> Iterator[CpuCgroup | None]:
    group = CpuCgroup.create(share) if share is not None else None
    try:
        yield group
    finally:
        if group is not None:
            group.remove()


def _bytecode_off(workdir: Path) -> tuple[str, ...]:
    """No .pyc anywhere: Python looks for bytecode only under an empty, read-only prefix and
    writes none, as on a layer shipped without compiled files (/opt is read-only)."""
    empty = workdir / "no-pyc"
    empty.mkdir(exist_ok=True)
    empty.chmod(0o555)
    return ("-B", "-X", f"pycache_prefix={empty}")


def measure(
    setup: Setup, variants: dict[str, Variant], runs: int
) -> tuple[dict[str, list[dict[str, Any]]], list[float]]:
    """Each variant ``runs`` times, interleaved (variant A, B, C, A, B, C...) so that a change in
    the machine's load spreads over all of them."""
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    loads: list[float] = []
    for variant in variants.values():
        _tree(setup, variant)  # exported and compiled before any timing
    for n in range(runs):
        for key, variant in variants.items():
            event, target = _one_death(setup, len(loads))
            loads.append(os.getloadavg()[0])
            with _cgroup(variant.share) as group:
                sample = _spawn(setup, event, target, cgroup=group, variant=variant)
            samples[key].append(sample)
            progress(
                f"{key} run {n + 1}/{runs}: {ms(sample['total_s'])} "
                f"(import {ms(sample['import_s'])}, load {loads[-1]:.1f})"
            )
    return samples, loads


def run(quick: bool = False) -> Result:
    result = Result("cold", tag="K")
    runs = 2 if quick else 3
    available, how = cpu_cgroup_available()
    slow = share_of(256) if available else None
    with prepared("oomcheck-bench-cold-") as (setup, shape):
        nopyc = _bytecode_off(setup.workdir)
        variants = {
            # as before this work: the layer shipped without bytecode
            "before-full": Variant(BEFORE, flags=nopyc),
            "before-256": Variant(BEFORE, slow, flags=nopyc),
            # levers, one at a time, each on top of the previous row
            "bytecode-256": Variant(BEFORE, slow),
            "presence-256": Variant(PRESENCE_FIRST, slow),
            "session-256": Variant(COLD_LEVERS, slow, files_from=((SETTINGS, PRESENCE_FIRST),)),
            "256": Variant(None, slow),
            "init-256": Variant(None, slow, (("BENCH_INIT", "1"),)),
            "full": Variant(None),
            str(DEFAULT_MB): Variant(None, share_of(DEFAULT_MB) if available else None),
        }
        if available and not quick:
            for memory in MEMORY_ROWS:
                variants[str(memory)] = Variant(None, share_of(memory))
        samples, loads = measure(setup, variants, runs)
        floor = [_floor(setup, slow) for _ in range(runs)]
    result.notes.append(f"cold: the children run {shape}")
    _rows(result, samples, loads, available=available, how=how)
    result.add(
        "the libraries alone at 256 MB's CPU share: process start -> botocore, redis, celery and "
        "Powertools imported (what every cold start pays before any code of ours)",
        f"{ms(median(floor))} ({runs} runs)",
        f"the whole cold event path: {ms(result.facts['cold_256_s'])}",
        "(floor)",
        None,
    )
    result.facts["cold_floor_256_s"] = median(floor)
    return result


# What a cold start imports whatever our code does: the clients, the broker and backend client,
# Celery's app and control, and the Powertools the handler is built on.
LIBRARIES = (
    "import botocore.session, redis, kombu.transport.redis, celery.app.control; "
    "from celery import Celery; from aws_lambda_powertools import Logger, Metrics; "
    "from aws_lambda_powertools.utilities.data_classes import SQSEvent"
)


def _floor(setup: Setup, share: float | None) -> float:
    """Seconds from spawning an interpreter to the libraries imported, in the cgroup."""
    python, layer = interpreter(setup)
    code = f"import sys; sys.path[:0] = {layer.split(os.pathsep)!r}; {LIBRARIES}"
    with _cgroup(share) as group:
        started = time.time()
        subprocess.run(
            [*joining(group), *python, "-c", code],
            capture_output=True,
            check=True,
            timeout=120,
        )
        return time.time() - started


def _fig(runs: list[dict[str, Any]]) -> str:
    total = median([r["total_s"] for r in runs])
    return (
        f"{ms(total)} (init {ms(median([r['import_s'] for r in runs]))}, "
        f"first invocation {ms(median([r['handler_s'] for r in runs]))}, "
        f"CPU {ms(median([r['cpu_s'] for r in runs]))}; {len(runs)} runs)"
    )


def _med(samples: dict[str, list[dict[str, Any]]], key: str) -> float:
    return median([r["total_s"] for r in samples[key]])


LEVERS = (
    # (row, variant, the variant it is measured against)
    (
        "bytecode in the layer (was stripped: every module compiled at start)",
        "bytecode-256",
        "before-256",
    ),
    (
        "a check started by the event asks presence first (no 1 s wait for the dead)",
        "presence-256",
        "bytecode-256",
    ),
    (
        "one boto3 session for every client (botocore data loaded once)",
        "session-256",
        "presence-256",
    ),
    (
        "ssm: references read with boto3 on that session, not Powertools Parameters",
        "256",
        "session-256",
    ),
)


def _rows(
    result: Result,
    samples: dict[str, list[dict[str, Any]]],
    loads: list[float],
    *,
    available: bool,
    how: str,
) -> None:
    full, at256 = _med(samples, "full"), _med(samples, "256")
    result.add(
        "cold event path at full speed: process start -> SNS publish",
        _fig(samples["full"]),
        f"before this work (as shipped, no bytecode): {ms(_med(samples, 'before-full'))}",
        "(informational)",
        None,
    )
    if not available:
        result.notes.append(f"cold: {how}; the 256 MB rows ran at full speed")
    default = _med(samples, str(DEFAULT_MB))
    result.add(
        f"cold event path at the default memory for checks, {DEFAULT_MB} MB "
        f"({share_of(DEFAULT_MB):.1%} of a core, {how}): process start -> SNS publish",
        _fig(samples[str(DEFAULT_MB)])
        + f", max {ms(max(r['total_s'] for r in samples[str(DEFAULT_MB)]))}",
        f"256 MB (the default before): {ms(at256)}",
        "<= 1.5 s",
        default <= TARGET_S,
    )
    result.add(
        f"cold event path at 256 MB's CPU share ({share_of(256):.1%} of a core): process start "
        "-> SNS publish (a watch's memory; with SnapStart see N1)",
        _fig(samples["256"]),
        f"before this work (as shipped, no bytecode): {ms(_med(samples, 'before-256'))}",
        "(informational)",
        None,
    )
    for what, key, against in LEVERS:
        now, then = _med(samples, key), _med(samples, against)
        result.add(
            f"lever at 256 MB: {what}",
            _fig(samples[key]),
            f"without it: {ms(then)} ({ms(then - now)} saved)",
            "(lever)",
            None,
        )
    init = samples["init-256"]
    result.add(
        "clients built during init (what SnapStart would snapshot), 256 MB: init / first "
        "invocation",
        f"{ms(median([r['import_s'] for r in init]))} / "
        f"{ms(median([r['handler_s'] for r in init]))} (total {ms(_med(samples, 'init-256'))})",
        f"built in the first invocation: {ms(median([r['import_s'] for r in samples['256']]))} "
        f"/ {ms(median([r['handler_s'] for r in samples['256']]))}",
        "(lever)",
        None,
    )
    for memory in MEMORY_ROWS:
        key = str(memory)
        if key not in samples:
            continue
        wall = _med(samples, key)
        result.facts[f"cold_{memory}_s"] = wall
        result.add(
            f"lever: memory {memory} MB ({share_of(memory):.1%} of a core), cold event path",
            _fig(samples[key]),
            f"256 MB: {ms(at256)}; GB-s of this cold run {wall * memory / 1024:.3f} vs "
            f"{at256 * 256 / 1024:.3f} at 256 MB (x ${PRICE_GB_S * 1e6:.2f} per million GB-s)",
            "(lever)",
            None,
        )
    result.notes.append(
        f"cold: 1-minute load average while sampling: median {median(loads):.1f}, max "
        f"{max(loads):.1f} (2 cores shared); variants interleaved run by run. Full speed "
        f"{ms(full)}."
    )
    result.facts["cold_256_s"] = at256
    result.facts[f"cold_{DEFAULT_MB}_s"] = default
    result.facts["cold_full_s"] = full


def profile() -> None:
    """One cold event path at full speed under cProfile and -X importtime, in the children's
    interpreter on the built layer: where it goes."""
    with prepared("oomcheck-bench-cold-") as (setup, shape):
        event, target = _one_death(setup, 0)
        workdir = setup.workdir
        stats = workdir / "cold.prof"
        script = workdir / "child.py"
        script.write_text(CHILD)
        python, layer = interpreter(setup)
        argv = [*python, "-X", "importtime", "-m", "cProfile", "-o", str(stats)]
        argv += [str(script), str(FUNCTION), layer, str(event), str(workdir / "o.json")]
        child_env = {**os.environ, **setup.env, "OOMCHECK_TARGET": target}
        child_env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [*argv, str(time.time())],
            env=child_env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=120,
        )
        own: dict[str, float] = {}
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                us, _, name = line[len("import time:") :].split("|")
                top = name.strip().split(".")[0]
                own[top] = own.get(top, 0.0) + int(us) / 1e3
        print(f"{shape}; import self-time by package (ms):")
        for name, spent in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {spent:8.1f}  {name}")
        import pstats

        pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    from bench.common import render_table

    if "--profile" in sys.argv:
        profile()
    else:
        print(render_table([run("--quick" in sys.argv)], "bench_cold"))
