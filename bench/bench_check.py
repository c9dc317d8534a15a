"""A healthy run, and the Lambda's cold start.

Healthy run: 3, then 8 real Celery workers (prefork, concurrency 1) on a private redis-server
(broker and result backend), state in a temp file. The backend holds finished results and some
workers run a long task, so the scan and active() have something to read. After the first run
(discovery, which waits the full inspect timeout on purpose), every run is timed; beside it, in
the same run, the naive "who is alive": ``app.control.inspect().ping()`` with Celery's default
1 s timeout.

Cold start: fresh interpreters import functions/checker/app.py the way Lambda does (the function
directory and the layer on sys.path) and time the import. The handler imports Celery, redis and
boto3 lazily, on its first invocation, so that is measured too: fresh processes that invoke the
handler (URLs as ssm: references, state in DynamoDB, SNS topic and ECS log group, all on a moto
server) once cold and then warm, and fresh processes that import exactly the modules the first
invocation imported. ``-X importtime`` names the biggest contributors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import (
    FUNCTION,
    LAMBDA_CPU_FACTOR,
    LAYER,
    ROOT,
    CountingPublisher,
    Phases,
    Result,
    median,
    moto_server,
    ms,
    percentile,
    private_redis,
    progress,
)

TARGET_HEALTHY_S = 0.300
TARGET_IMPORT_S = 0.400
TABLE = "oomcheck-bench"
TOPIC = "oomcheck-bench-alerts"
LOG_GROUP = "/oomcheck/bench/ecs-task-state"
SSM_BROKER = "/oomcheck/bench/broker-url"
SSM_BACKEND = "/oomcheck/bench/result-backend"
# Functions whose cumulative time splits the first invocation (file suffix:function name).
PROFILED = (
    "oomcheck/config/settings.py:resolve_reference",
    "botocore/session.py:create_client",
    "oomcheck/sources/inspector.py:_make_app",
    "oomcheck/wiring.py:build_deps",
    "app.py:_get_deps",
    "oomcheck/runner.py:run_once",
    "oomcheck/sources/inspector.py:observe",
    "oomcheck/store/dynamodb.py:load",
)

# The measuring child. Only sys/os/time are loaded before the timed import; everything after it
# (json, the bench's DynamoDB meter) comes once the figures it could disturb are taken.
CHILD = r"""
import os, sys, time
func_dir, layer_dir, root, mode, out_path, warm = sys.argv[1:7]
sys.path[:0] = [func_dir, layer_dir]
t0 = time.perf_counter()
import app
result = {"import_s": time.perf_counter() - t0}
if mode == "lazy":
    names = open(os.environ["BENCH_LAZY_MODULES"]).read().split()
    failed = []
    t0 = time.perf_counter()
    for name in names:
        try:
            __import__(name)
        except Exception:
            failed.append(name)
    result["lazy_s"] = time.perf_counter() - t0
    result["lazy_failed"] = failed
elif mode == "invoke":
    from types import SimpleNamespace
    def context(n):
        return SimpleNamespace(
            function_name="oomcheck-checker", function_version="$LATEST",
            invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:oomcheck-checker",
            memory_limit_in_mb=256, aws_request_id=f"bench-{os.getpid()}-{n}",
            log_group_name="/aws/lambda/oomcheck-checker", log_stream_name="bench",
            get_remaining_time_in_millis=lambda: 30000)
    event = {"mode": "check", "scheduled_time": "2026-01-01T00:00:00Z"}
    def invoke(n):
        sys.stdout.write(f"@@bench-invocation {n}@@\n")
        sys.stdout.flush()
        cpu = time.process_time()
        t = time.perf_counter()
        body = app.handler(event, context(n))
        wall = time.perf_counter() - t
        sys.stdout.flush()
        return wall, time.process_time() - cpu, body
    before = set(sys.modules)
    sys.stderr.write("@@phase first-invocation@@\n")
    sys.stderr.flush()
    if os.environ.get("BENCH_PROFILE"):
        import cProfile, pstats
        profile = cProfile.Profile()
        wall, cpu, body = profile.runcall(invoke, 0)
        wanted = os.environ["BENCH_PROFILE"].split(",")
        spent = {}
        for (path, _, func), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
            for want in wanted:
                where, _, name = want.partition(":")
                if func == name and path.endswith(where):
                    spent[want] = max(spent.get(want, 0.0), cumulative)
        result["profile"] = spent
        result["profile_total"] = wall
    else:
        wall, cpu, body = invoke(0)
    sys.stderr.write("@@phase warm@@\n")
    sys.stderr.flush()
    result["new_modules"] = [m for m in sys.modules if m not in before]
    result.update(first_s=wall, first_cpu_s=cpu)
    sys.path.insert(0, root)
    from bench.common import DynamoMeter, peak_rss_mb
    meter = DynamoMeter(app._deps.store.client)
    result.update(warm_s=[], warm_cpu_s=[], dynamo=[], alive=[], state_writes=[], sources=[])
    for n in range(1, int(warm) + 1):
        mark = meter.mark()
        wall, cpu, body = invoke(n)
        result["warm_s"].append(wall)
        result["warm_cpu_s"].append(cpu)
        result["dynamo"].append(meter.since(mark))
        result["alive"].append(sum(1 for w in body["workers"] if w["status"] == "alive"))
        result["state_writes"].append(body["stats"].get("state_writes"))
        result["sources"].append(body["sources"])
    result["peak_rss_mb"] = peak_rss_mb()
import json
with open(out_path, "w") as handle:
    json.dump(result, handle)
"""


def _child(
    mode: str,
    env: dict[str, str],
    workdir: Path,
    *,
    warm: int = 0,
    importtime: bool = False,
    timeout: float = 120.0,
) -> tuple[dict[str, Any], str, str]:
    out = workdir / f"child-{mode}-{time.monotonic_ns()}.json"
    argv = [sys.executable]
    if importtime:
        argv.append("-X")
        argv.append("importtime")
    argv += ["-c", CHILD, str(FUNCTION), str(LAYER), str(ROOT), mode, str(out), str(warm)]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=workdir
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{mode} child failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(out.read_text()), done.stdout, done.stderr


def _startup_s(env: dict[str, str], runs: int) -> float:
    """Wall time of an interpreter that imports nothing: the floor under every cold start."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=30)
        times.append(time.perf_counter() - t0)
    return median(times)


def _log_bytes(stdout: str) -> dict[int, tuple[int, int]]:
    """Invocation number -> (bytes, lines) the handler printed (Powertools logs + EMF)."""
    out: dict[int, tuple[int, int]] = {}
    current: int | None = None
    for line in stdout.splitlines(keepends=True):
        if line.startswith("@@bench-invocation "):
            current = int(line.split()[1].rstrip("@"))
            out[current] = (0, 0)
            continue
        if current is not None:
            size, count = out[current]
            out[current] = (size + len(line.encode()), count + 1)
    return out


def _importtime(stderr: str) -> dict[str, list[tuple[str, float]]]:
    """Per phase (module import / first invocation), each top-level package's own import time:
    the sum of the "self" column over its modules, so that a package is charged for its own
    code and not for what it pulls in (app.py's cumulative time would hide everything)."""
    phase = "import"
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in stderr.splitlines():
        if line.startswith("@@phase "):
            phase = line.strip("@").split()[1]
            continue
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line[len("import time:") :].split("|")
        totals[phase][name.strip().split(".")[0]] += int(own) / 1e6
    return {p: sorted(v.items(), key=lambda kv: -kv[1]) for p, v in totals.items()}


def _provision(broker: str, backend: str) -> str:
    from oomcheck.aws import client
    from oomcheck.provision import setup

    provisioned = setup(TABLE, TOPIC)
    client("logs").create_log_group(logGroupName=LOG_GROUP)
    ssm = client("ssm")
    ssm.put_parameter(Name=SSM_BROKER, Value=broker, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=SSM_BACKEND, Value=backend, Type="SecureString", Overwrite=True)
    return provisioned.topic_arn


def measure_handler(
    broker: str, backend: str, workdir: Path, quick: bool, expect_alive: int
) -> dict[str, Any]:
    """Cold start and warm invocations of the real handler in fresh processes. Needs a moto
    server (AWS_ENDPOINT_URL set) and live workers on ``broker``."""
    topic_arn = _provision(broker, backend)
    env = {
        **os.environ,
        "OOMCHECK_BROKER_URL": f"ssm:{SSM_BROKER}",
        "OOMCHECK_RESULT_BACKEND": f"ssm:{SSM_BACKEND}",
        "OOMCHECK_TABLE": TABLE,
        "OOMCHECK_TOPIC_ARN": topic_arn,
        "OOMCHECK_LOG_GROUPS": LOG_GROUP,
        "POWERTOOLS_SERVICE_NAME": "oomcheck-bench",
        "POWERTOOLS_METRICS_NAMESPACE": "oomcheck",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    imports = 5 if quick else 12
    invokers = 1 if quick else 3
    warm = 5 if quick else 10
    progress("check: handler warm-up (first run ever: discovery, state written to DynamoDB)")
    _child("invoke", env, workdir, warm=0)
    progress(f"check: {imports} fresh processes importing the handler module")
    import_s = [_child("import", env, workdir)[0]["import_s"] for _ in range(imports)]
    startup = _startup_s(env, imports)
    progress(f"check: {invokers} fresh processes invoking the handler (1 cold + {warm} warm)")
    runs = []
    for _ in range(invokers):
        result, stdout, _ = _child("invoke", env, workdir, warm=warm)
        result["log"] = _log_bytes(stdout)
        runs.append(result)
    lazy_file = workdir / "lazy-modules.txt"
    lazy_file.write_text("\n".join(runs[0]["new_modules"]))
    lazy_env = {**env, "BENCH_LAZY_MODULES": str(lazy_file)}
    progress(f"check: {imports} fresh processes importing what the first invocation imported")
    lazy = [_child("lazy", lazy_env, workdir) for _ in range(imports)]
    progress("check: one first invocation under cProfile")
    profiled, _, _ = _child("invoke", {**env, "BENCH_PROFILE": ",".join(PROFILED)}, workdir, warm=0)
    progress("check: one run under -X importtime")
    _, _, stderr = _child("invoke", env, workdir, warm=1, importtime=True)
    warm_s = [w for r in runs for w in r["warm_s"]]
    warm_cpu = [c for r in runs for c in r["warm_cpu_s"]]
    logs = [r["log"][n] for r in runs for n in r["log"] if n > 0]
    dynamo = [d for r in runs for d in r["dynamo"]]
    alive = [a for r in runs for a in r["alive"]]
    return {
        "import_s": median(import_s),
        "import_p90_s": percentile(import_s, 90),
        "import_runs": len(import_s),
        "startup_s": startup,
        "lazy_s": median([r[0]["lazy_s"] for r in lazy]),
        "lazy_failed": lazy[0][0]["lazy_failed"],
        "lazy_modules": len(runs[0]["new_modules"]),
        "first_s": median([r["first_s"] for r in runs]),
        "first_cpu_s": median([r["first_cpu_s"] for r in runs]),
        "warm_s": median(warm_s),
        "warm_p90_s": percentile(warm_s, 90),
        "warm_cpu_s": median(warm_cpu),
        "warm_runs": len(warm_s),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "log_bytes": median([b for b, _ in logs]),
        "log_lines": median([n for _, n in logs]),
        "dynamo_wru": median([d["wru"] for d in dynamo]),
        "dynamo_rru": median([d["rru"] for d in dynamo]),
        "dynamo_item_writes": max(d["item_writes"] for d in dynamo),
        "alive_ok": all(a == expect_alive for a in alive),
        "sources": runs[0]["sources"][-1],
        "importtime": _importtime(stderr),
        "profile": profiled["profile"],
        "profile_total": profiled["profile_total"],
    }


# ------------------------------------------------------------------------------ healthy runs


def _send_work(broker: str, backend: str, workers: int, done_tasks: int) -> Any:
    """Finished results in the backend, and a long task for about half of the new workers.

    Only the first batch waits for its quick tasks: once workers are busy with a long task, each
    also reserves one more message (prefetch), and a quick task reserved there would wait
    behind it."""
    from celery import Celery

    client = Celery("bench-client", broker=broker, backend=backend, set_as_current=False)
    for _ in range(done_tasks):
        client.send_task("demo.pid").get(timeout=60)
    for _ in range((workers + 1) // 2):
        client.send_task("demo.sleepy", args=[900])
    return client


def _healthy(
    n: int, broker: str, backend: str, workdir: Path, *, repeats: int, pings: int
) -> dict[str, Any]:
    from oomcheck.config.settings import Settings
    from oomcheck.runner import run_once
    from oomcheck.wiring import build_deps

    settings = Settings(
        broker_url=broker, result_backend=backend, state_file=str(workdir / f"state-{n}.json")
    )
    deps = build_deps(settings)
    deps.publisher = CountingPublisher()
    assert deps.inspector is not None
    try:
        t0 = time.perf_counter()
        first = run_once(deps, "check")
        discovery_s = time.perf_counter() - t0
        if sum(1 for w in first.workers if w["status"] == "alive") != n:
            raise RuntimeError(f"discovery saw {len(first.workers)} of {n} workers")
        # Let the long tasks reach their workers so that active() has them in every timed run
        # (bounded; some may sit reserved behind another long task, which is fine too).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if run_once(deps, "check").stats.get("started_tasks", 0) >= (n + 1) // 2:
                break
            time.sleep(0.5)
        walls, cpus, bad = [], [], 0
        stats: dict[str, Any] = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            c0 = time.process_time()
            report = run_once(deps, "check")
            cpus.append(time.process_time() - c0)
            walls.append(time.perf_counter() - t0)
            alive = sum(1 for w in report.workers if w["status"] == "alive")
            if alive != n or any(f.alertable for f in report.findings):
                bad += 1
            stats = dict(report.stats)
        pings_s = []
        for _ in range(pings):
            t0 = time.perf_counter()
            deps.inspector.app.control.inspect().ping()
            pings_s.append(time.perf_counter() - t0)
        phases = _phases(deps, 10)
    finally:
        deps.inspector.close()
    return {
        "n": n,
        "median_s": median(walls),
        "p90_s": percentile(walls, 90),
        "cpu_s": median(cpus),
        "runs": len(walls),
        "bad": bad,
        "discovery_s": discovery_s,
        "ping_s": median(pings_s),
        "pings": len(pings_s),
        "stats": stats,
        "phases": phases,
    }


def _phases(deps: Any, runs: int) -> dict[str, float]:
    """Median time per part of a healthy run, from a separate pass with timing wrappers on this
    run's own adapter instances (the timed runs above carry no wrappers)."""
    from oomcheck.runner import run_once

    spent: dict[str, list[float]] = defaultdict(list)
    phases = Phases()
    targets = [
        (deps.inspector, "observe", "inspect"),
        (deps.results, "scan", "result scan"),
        (deps.broker, "unacked", "broker scan"),
    ]
    targets += [(deps.store, a, "state file") for a in ("acquire", "load", "save", "release")]
    for obj, attr, label in targets:
        phases.wrap(obj, attr, label)
    try:
        for _ in range(runs):
            phases.spent.clear()
            t0 = time.perf_counter()
            run_once(deps, "check")
            total = time.perf_counter() - t0
            for label, seconds in phases.spent.items():
                spent[label].append(seconds)
            spent["other (evaluate, report)"].append(total - sum(phases.spent.values()))
    finally:
        for obj, attr, _ in targets:
            vars(obj).pop(attr, None)
    return {label: median(values) for label, values in spent.items()}


class Workers:
    """Real workers on one broker, started in batches; stop() leaves nothing behind."""

    def __init__(self, broker: str, backend: str, workdir: Path) -> None:
        self.broker, self.backend, self.workdir = broker, backend, workdir
        self.workers: list[Any] = []
        self.client: Any = None

    def grow(self, n: int, done_tasks: int) -> None:
        from celery import Celery

        from oomcheck.demo.workers import WorkerProcess

        progress(f"check: starting workers up to {n}")
        new = [
            WorkerProcess(
                f"bench{i}@ip-127-0-0-1",
                self.broker,
                self.backend,
                log_path=str(self.workdir / f"worker{i}.log"),
            ).start()
            for i in range(len(self.workers), n)
        ]
        self.workers += new
        probe = Celery("bench-probe", broker=self.broker, set_as_current=False)
        try:
            for w in new:
                w.wait_ready(probe.control, timeout=60)
        finally:
            probe.close()
        if self.client is not None:
            self.client.close()
        self.client = _send_work(self.broker, self.backend, len(new), done_tasks)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for w in self.workers:
            w.stop()


def handler_standalone(quick: bool) -> dict[str, Any]:
    """The handler figures alone (for ``--only cost``): 3 workers, redis, moto, then cleanup."""
    workdir = Path(tempfile.mkdtemp(prefix="oomcheck-bench-handler-"))
    try:
        with private_redis() as base, moto_server():
            fleet = Workers(f"{base}/1", f"{base}/2", workdir)
            try:
                fleet.grow(3, 200)
                return measure_handler(fleet.broker, fleet.backend, workdir, quick, 3)
            finally:
                fleet.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(quick: bool = False) -> Result:
    result = Result("check")
    repeats = 10 if quick else 30
    pings = 2 if quick else 3
    sizes = (3,) if quick else (3, 8)
    workdir = Path(tempfile.mkdtemp(prefix="oomcheck-bench-check-"))
    healthy: list[dict[str, Any]] = []
    handler: dict[str, Any] | None = None
    try:
        with private_redis() as base, moto_server():
            fleet = Workers(f"{base}/1", f"{base}/2", workdir)
            try:
                for n in sizes:
                    fleet.grow(n, 200 if n == sizes[0] else 0)
                    progress(f"check: {n} workers ready; timing {repeats} healthy runs")
                    healthy.append(
                        _healthy(
                            n, fleet.broker, fleet.backend, workdir, repeats=repeats, pings=pings
                        )
                    )
                    if n == sizes[0]:
                        handler = measure_handler(fleet.broker, fleet.backend, workdir, quick, n)
            finally:
                fleet.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for h in healthy:
        met = h["median_s"] < TARGET_HEALTHY_S and h["p90_s"] < TARGET_HEALTHY_S and not h["bad"]
        result.add(
            f"healthy check, {h['n']} live workers (median of {h['runs']} runs after discovery)",
            f"{ms(h['median_s'])} (p90 {ms(h['p90_s'])}; CPU {ms(h['cpu_s'])})",
            f"inspect().ping(), 1 s default timeout: {ms(h['ping_s'])} (median of {h['pings']})",
            "< 300 ms",
            met,
        )
        phases = ", ".join(f"{k} {ms(v)}" for k, v in sorted(h["phases"].items()))
        st = h["stats"]
        result.notes.append(
            f"{h['n']} workers: one healthy run by part (median): {phases}; per run "
            f"{st.get('result_keys_scanned', 0)} result keys scanned, "
            f"{st.get('started_tasks', 0)} STARTED, {st.get('unacked_messages', 0)} unacked"
            + (f"; {h['bad']} run(s) saw a worker missing or a finding" if h["bad"] else "")
        )
    if healthy:
        h = healthy[-1]
        result.add(
            f"discovery run ({h['n']} workers; every 300 s and on an empty roster)",
            ms(h["discovery_s"]),
            "inspect timeout 1 s (waited on purpose, to hear new workers)",
            "(informational)",
            None,
        )
        result.facts["healthy_s"] = healthy[0]["median_s"]
        result.facts["healthy_cpu_s"] = healthy[0]["cpu_s"]
    if handler is not None:
        _handler_rows(result, handler)
        result.facts["handler"] = handler
    return result


def _handler_rows(result: Result, h: dict[str, Any]) -> None:
    total = h["import_s"] + h["lazy_s"]
    result.add(
        f"cold start: import handler module (median of {h['import_runs']} fresh processes)",
        f"{ms(h['import_s'])} (p90 {ms(h['import_p90_s'])})",
        f"bare interpreter start+exit: {ms(h['startup_s'])}",
        "< 400 ms",
        h["import_s"] < TARGET_IMPORT_S,
    )
    result.add(
        f"cold start: + lazy imports of the first invocation ({h['lazy_modules']} modules)",
        f"+{ms(h['lazy_s'])}",
        f"all imports at cold start: {ms(total)}",
        "module + lazy < 400 ms",
        total < TARGET_IMPORT_S,
    )
    result.add(
        "first invocation (imports, SSM, clients, connections) vs warm invocation",
        f"first {ms(h['first_s'])}; warm {ms(h['warm_s'])} (p90 {ms(h['warm_p90_s'])})",
        f"healthy run alone (file state): {ms(result.facts.get('healthy_s', float('nan')))}",
        "warm < 300 ms",
        h["warm_s"] < TARGET_HEALTHY_S and h["alive_ok"],
    )
    tops = h["importtime"]
    for phase, label in (("import", "module import"), ("first-invocation", "first invocation")):
        top = ", ".join(f"{name} {ms(s)}" for name, s in tops.get(phase, [])[:6])
        result.notes.append(f"-X importtime, {label}: own import time by package: {top}")
    prof = h["profile"]
    parts = ", ".join(
        f"{k.rsplit(':', 1)[1]} {prof[k] / h['profile_total']:.0%}" for k in PROFILED if k in prof
    )
    result.notes.append(
        f"first invocation under cProfile ({ms(h['profile_total'])} with its overhead), share of "
        f"the time under each function (nested, so they overlap): {parts}. create_client is "
        "boto3 loading service models for the ssm, dynamodb, sns, logs clients."
    )
    result.notes.append(
        f"handler: warm invocation CPU {ms(h['warm_cpu_s'])}, so ~"
        f"{ms(h['warm_s'] - h['warm_cpu_s'] + h['warm_cpu_s'] * LAMBDA_CPU_FACTOR)} at 256 MB "
        f"(CPU x {LAMBDA_CPU_FACTOR:.1f}); first invocation CPU {ms(h['first_cpu_s'])}. All "
        "figures on this machine's full cores: a 256 MB Lambda has ~1/7 of a vCPU, and imports "
        "are CPU-bound (Lambda's init phase may run faster than that share; not measured here). "
        f"The 'lazy' figure imports the same {h['lazy_modules']} modules in their first-seen "
        f"order ({len(h['lazy_failed'])} could not be imported on their own). Sources seen by "
        f"the handler: {', '.join(f'{k} {v}' for k, v in h['sources'].items())}"
    )


if __name__ == "__main__":
    from bench.common import render_table

    print(render_table([run("--quick" in sys.argv)], "bench_check"))
