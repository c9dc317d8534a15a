"""`oomcheck` as a user runs it (a subprocess): bad input is one line on stderr and exit 78 (bad
settings) or 64 (a bad command line), never a traceback; an unreachable Redis of any URL form is a
degraded report, like a plain one, and exit 69."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oomcheck.demo import services

ROOT = Path(__file__).resolve().parents[2]
# every character a URL reserves; each segment is distinctive enough to be searched alone
SEGMENTS = ("Zq9vQ", "Wk7xB", "Pv3mN", "Rb5tK", "Tn2hJ", "Ym4cD")
SECRET = "Zq9vQ;Wk7xB@Pv3mN/Rb5tK#Tn2hJ?Ym4cD%zz"


def _oomcheck(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    clean["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "layers" / "oomcheck"), str(ROOT), clean.get("PYTHONPATH", "")]
    )
    clean.update(OOMCHECK_STATE_FILE=str(tmp_path / "state.json"), OOMCHECK_INSPECT_TIMEOUT="0.2")
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "oomcheck.cli", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line_error(run: subprocess.CompletedProcess[str], starts: str, code: int = 78) -> str:
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"oomcheck: {starts}"), lines[0]
    for part in SEGMENTS:
        assert part not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "starts"),
    [
        pytest.param(
            ["check"],
            {
                "OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0",
                "OOMCHECK_RESULT_BACKEND": "redis://h:6379/abc",
            },
            "OOMCHECK_RESULT_BACKEND: the database after the host must be a number",
            id="db-not-a-number",
        ),
        pytest.param(
            ["check", "--backend", f"redis://:{SECRET}@127.0.0.1:6379/abc"],
            {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0"},
            "--backend: the database",
            id="flag-with-reserved-password",
        ),
        pytest.param(
            ["check"],
            {"OOMCHECK_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:port/0"},
            "OOMCHECK_BROKER_URL: the port must be",
            id="bad-port",
        ),
        pytest.param(["check"], {}, "no broker", id="no-broker"),
        pytest.param(
            ["watch"],
            {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0", "OOMCHECK_WATCH_INTERVAL": "nan"},
            "OOMCHECK_WATCH_INTERVAL must be a number of seconds",
            id="env-interval-nan",
        ),
        pytest.param(
            ["watch", "--interval", "nan"],
            {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0"},
            "--interval must be a number of seconds",
            id="flag-interval-nan",
        ),
        pytest.param(
            ["watch", "--duration", "nan"],
            {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0"},
            "--duration must be a number of seconds",
            id="flag-duration-nan-is-a-bad-command-line",
        ),
        pytest.param(
            ["check"],
            {"OOMCHECK_BROKER_URL": "redis://127.0.0.1:1/0", "OOMCHECK_REMIND_AFTER": "inf"},
            "OOMCHECK_REMIND_AFTER must be",
            id="infinite-threshold",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_78_or_64(tmp_path, args, env, starts):
    code = 64 if "--duration" in args else 78  # --duration is the CLI's own, not a setting
    _one_line_error(_oomcheck(tmp_path, *args, **env), starts, code)


def _closed_url(form: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    port = services.free_port()
    if form == "unix":
        return f"unix://:{SECRET}@{tmp_path}/absent.sock?db=1", {}
    if form == "sentinel":
        options = '{"master_name": "mymaster"}'
        return f"sentinel://:{SECRET}@127.0.0.1:{port}", {
            "OOMCHECK_RESULT_TRANSPORT_OPTIONS": options
        }
    scheme = {"plain": "redis", "tls": "rediss", "cluster": "redis+cluster"}[form]
    return f"{scheme}://:{SECRET}@127.0.0.1:{port}/0".replace("+cluster", "+cluster"), {}


@pytest.mark.parametrize("form", ["plain", "tls", "unix", "sentinel", "cluster"])
def test_an_unreachable_backend_of_any_form_is_a_degraded_report(tmp_path, form):
    backend, extra = _closed_url(form, tmp_path)
    run = _oomcheck(
        tmp_path,
        "check",
        "--json",
        OOMCHECK_BROKER_URL=f"redis://127.0.0.1:{services.free_port()}/0",
        OOMCHECK_RESULT_BACKEND=backend,
        **extra,
    )
    assert "Traceback" not in run.stderr, run.stderr
    report = json.loads(run.stdout[run.stdout.index("{") :])
    assert report["sources"]["results"].startswith("error: "), report["sources"]
    assert report["sources"]["inspect"].startswith("error: ")
    assert run.returncode == 69  # could not check (EX_UNAVAILABLE)
    for part in SEGMENTS:
        assert part not in run.stdout + run.stderr
