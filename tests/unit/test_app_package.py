"""`oomcheck -A pkg`, where ``pkg/celery.py`` holds the app and fails to import, shows the real
import error, as `-A pkg.celery` does (Celery's find_app drops it and reports a missing
attribute). Exit codes are the CLI's (README); here: not 0, one line on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BROKEN = "import not_installed_anywhere_xyz\nfrom celery import Celery\napp = Celery('pkg')\n"


def _oomcheck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    env["PYTHONPATH"] = str(ROOT / "layers" / "oomcheck")
    env["OOMCHECK_STATE_FILE"] = str(cwd / "state.json")
    return subprocess.run(
        [sys.executable, "-m", "oomcheck.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode != 0
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.mark.parametrize("spec", ["pkg", "pkg.celery"])
def test_a_broken_celery_module_shows_its_import_error_whichever_form_names_it(
    tmp_path: Path, spec: str
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "celery.py").write_text(BROKEN)
    line = _one_line(_oomcheck(tmp_path, "-A", spec, "check", "--json"))
    assert line.startswith(
        f"oomcheck: -A {spec}: the app failed to import: ModuleNotFoundError: "
        "No module named 'not_installed_anywhere_xyz' ("
    ), line
    assert str(tmp_path / "pkg" / "celery.py") in line and "has no attribute" not in line


def test_a_package_without_a_celery_module_still_says_there_is_no_app(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("x = 1\n")
    line = _one_line(_oomcheck(tmp_path, "-A", "pkg", "check", "--json"))
    assert line.startswith("oomcheck: -A pkg: no Celery app there ("), line
