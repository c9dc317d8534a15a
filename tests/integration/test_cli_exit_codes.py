"""Every exit code of the `oomcheck` console script, each from a real run (README, "Exit codes"):
a cron job or CI wrapper must tell "a worker died" (2) from "I could not look" (69) and from "I
was called wrong" (64) or "I was configured wrong" (78)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from oomcheck.demo import services
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration

# the console script installed beside this interpreter, as a user runs it
OOMCHECK = str(Path(sys.executable).with_name("oomcheck"))


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    clean.update(
        {
            "OOMCHECK_STATE_FILE": str(tmp_path / "cli-state.json"),
            "OOMCHECK_INSPECT_TIMEOUT": "1",
            "OOMCHECK_REPING_TIMEOUT": "1",
            **env,
        }
    )
    return subprocess.run(
        [OOMCHECK, *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _check(fleet: Fleet) -> tuple[int, dict[str, Any]]:
    run = _run(
        fleet.tmp,
        "check",
        "--json",
        OOMCHECK_BROKER_URL=fleet.broker,
        OOMCHECK_RESULT_BACKEND=fleet.backend,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, json.loads(run.stdout)


def _kinds(report: dict[str, Any]) -> list[str]:
    return sorted(f["kind"] for f in report["findings"])


def test_healthy_fleet_exits_0(fleet: Fleet):
    fleet.start("healthy@oomcheck-test")
    for _ in range(2):
        code, report = _check(fleet)
        assert code == 0, report["findings"]
        assert [w["name"] for w in report["workers"]] == ["healthy@oomcheck-test"]


def test_a_real_death_exits_2(fleet: Fleet):
    # Given a worker the CLI knows, running a task
    worker = fleet.start("victim@oomcheck-test")
    assert _check(fleet)[0] == 0
    task = fleet.send("demo.sleepy", 60)
    fleet.wait_started(task)
    # When it is SIGKILLed
    worker.kill(signal.SIGKILL)
    assert worker.wait(20) is not None
    time.sleep(1.0)  # the kernel closes the dead process's sockets within a second
    # Then the next check reports the death with the findings code
    code, report = _check(fleet)
    assert code == 2
    assert "worker_lost" in _kinds(report)


def test_broker_and_backend_down_exits_69_on_every_run(tmp_path: Path):
    # Nothing listens on either port: the workers cannot be asked, the backend cannot be read
    down = {
        "OOMCHECK_BROKER_URL": f"redis://127.0.0.1:{services.free_port()}/0",
        "OOMCHECK_RESULT_BACKEND": f"redis://127.0.0.1:{services.free_port()}/1",
    }
    reports = []
    for _ in range(3):
        run = _run(tmp_path, "check", "--json", **down)
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode == 69, run.stderr
        reports.append(json.loads(run.stdout))
    for report in reports:
        assert report["sources"]["inspect"].startswith("error: "), report["sources"]

    # the third failure in a row opens source_unavailable: still "could not check", not findings
    def opened(report: dict[str, Any]) -> list[str]:
        return [f["kind"] for f in report["findings"] if f["severity"] in {"critical", "warning"}]

    assert opened(reports[0]) == opened(reports[1]) == []
    assert set(opened(reports[2])) == {"source_unavailable"}
    # no topic configured: its alert was printed, not published
    alerts = reports[2]["alerts"]
    assert alerts and all(a["published"] is False and a["printed"] is True for a in alerts)


@pytest.mark.parametrize(
    ("args", "env", "code", "starts"),
    [
        pytest.param(["check", "--bogus"], {}, 64, "oomcheck: unrecognized arguments", id="flag"),
        pytest.param([], {}, 64, "oomcheck: the following arguments are required", id="bare"),
        pytest.param(["frob"], {}, 64, "oomcheck: argument command: invalid choice", id="cmd"),
        pytest.param(
            ["check", "--timeout", "0"],
            {},
            64,
            "oomcheck check: argument --timeout: '0'",
            id="timeout-0",
        ),
        pytest.param(
            ["check", "--timeout", "abc"],
            {},
            64,
            "oomcheck check: argument --timeout: 'abc'",
            id="timeout-abc",
        ),
        pytest.param(["watch", "--duration", "-1"], {}, 64, "oomcheck: --duration", id="duration"),
        pytest.param(
            ["check"],
            {"OOMCHECK_INSPECT_TIMEOUT": "0"},
            78,
            "oomcheck: OOMCHECK_INSPECT_TIMEOUT",
            id="setting",
        ),
        pytest.param(
            ["check", "--broker", "redis://127.0.0.1:port/0"],
            {},
            78,
            "oomcheck: --broker",
            id="flag-setting",
        ),
    ],
)
def test_a_bad_command_line_or_setting_is_one_line_and_never_the_findings_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, starts: str
):
    env = {"OOMCHECK_BROKER_URL": f"redis://127.0.0.1:{services.free_port()}/0", **env}
    run = _run(tmp_path, *args, **env)
    assert run.returncode == code, run.stderr
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr  # no usage text
    assert lines[0].startswith(starts), lines[0]
