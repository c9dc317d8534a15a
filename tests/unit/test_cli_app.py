"""`oomcheck -A proj` as a user runs it (a subprocess in the project's directory): the app's own
configuration is used, the environment and flags beat it, the report says where each setting
came from and never shows a password; an app that cannot be imported is one line and exit 1.

The URLs point at a closed port: the settings are what is checked here (the integration test
tests/integration/test_cli_app.py runs the same against real workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Pw9xY-s3cr3t"

APP = f"""
from datetime import timedelta
from celery import Celery

app = Celery(
    "shop",
    broker="redis://:{PASSWORD}@127.0.0.1:1/3",
    backend="redis://:{PASSWORD}@127.0.0.1:1/4",
)
app.conf.update(
    result_expires=timedelta(minutes=10),
    result_failure_expires=120,
    broker_transport_options={{
        "global_keyprefix": "shop:",
        "visibility_timeout": 900,
        "fanout_patterns": True,
        # not JSON: oomcheck has no use for it and leaves it out
        "on_connect": print,
    }},
    result_backend_transport_options={{"global_keyprefix": "shopres:"}},
)
"""


def _oomcheck(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    # the library only: the project directory must come from the cwd, as for celery -A
    clean["PYTHONPATH"] = str(ROOT / "layers" / "oomcheck")
    clean.update(OOMCHECK_STATE_FILE=str(cwd / "state.json"), OOMCHECK_INSPECT_TIMEOUT="0.2")
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "oomcheck.cli", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _settings(run: subprocess.CompletedProcess[str]) -> dict[str, tuple[object, str]]:
    assert "Traceback" not in run.stderr, run.stderr
    report = json.loads(run.stdout)
    return {k: (v["value"], v["from"]) for k, v in report["settings"].items()}


def _no_password(run: subprocess.CompletedProcess[str]) -> None:
    assert "Pw9xY" not in run.stdout and "Pw9xY" not in run.stderr


def test_the_apps_configuration_is_used_and_named(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(APP)
    run = _oomcheck(tmp_path, "-A", "shop", "audit", "--json")
    assert _settings(run) == {
        "broker_url": ("redis://:***@127.0.0.1:1/3", "app"),
        "result_backend": ("redis://:***@127.0.0.1:1/4", "app"),
        "broker_transport_options": (
            '{"fanout_patterns": true, "global_keyprefix": "shop:", "visibility_timeout": 900}',
            "app",
        ),
        "result_transport_options": ('{"global_keyprefix": "shopres:"}', "app"),
        "broker_keyprefix": ("shop:", "app, global_keyprefix"),
        "result_keyprefix": ("shopres:", "app, global_keyprefix"),
        "visibility_timeout": (900.0, "app, visibility_timeout"),
        "result_expires": (600.0, "app"),
        "result_failure_expires": (120.0, "app"),
        "app_name": ("shop", "app"),
    }
    # the closed port is a degraded source, as without -A
    assert json.loads(run.stdout)["sources"]["results"].startswith("error:")
    _no_password(run)


def test_the_table_lists_the_settings_the_app_gave(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(APP)
    run = _oomcheck(tmp_path, "audit", "-A", "shop")
    lines = [line for line in run.stdout.splitlines() if line.startswith("setting ")]
    assert "setting result_expires: 600.0 (from app)" in lines
    assert "setting broker_url: redis://:***@127.0.0.1:1/3 (from app)" in lines
    _no_password(run)


def test_environment_and_flags_beat_the_app(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(APP)
    run = _oomcheck(
        tmp_path,
        "-A",
        "shop",
        "audit",
        "--json",
        "--broker",
        "redis://127.0.0.1:1/8",
        OOMCHECK_VISIBILITY_TIMEOUT="77",
        OOMCHECK_RESULT_KEYPREFIX="other:",
        # Celery's own variable beats the app's config for the workers too
        CELERY_RESULT_BACKEND="redis://127.0.0.1:1/9",
        OOMCHECK_RESULT_EXPIRES="0",
    )
    settings = _settings(run)
    assert settings["broker_url"] == ("redis://127.0.0.1:1/8", "flag --broker")
    assert settings["result_backend"] == ("redis://127.0.0.1:1/9", "env CELERY_RESULT_BACKEND")
    assert settings["visibility_timeout"] == (77.0, "env OOMCHECK_VISIBILITY_TIMEOUT")
    assert settings["result_keyprefix"] == ("other:", "env OOMCHECK_RESULT_KEYPREFIX")
    assert settings["result_expires"] == (None, "env OOMCHECK_RESULT_EXPIRES")
    # what the environment does not set still comes from the app
    assert settings["broker_keyprefix"] == ("shop:", "app, global_keyprefix")
    assert settings["result_failure_expires"] == (120.0, "app")


@pytest.mark.parametrize(
    ("files", "spec"),
    [
        pytest.param({"proj/__init__.py": "", "proj/celery.py": APP}, "proj", id="package"),
        pytest.param({"proj/__init__.py": "", "proj/celery.py": APP}, "proj.celery", id="module"),
        pytest.param({"tasks.py": APP.replace("app", "shop_app")}, "tasks:shop_app", id="attr"),
    ],
)
def test_app_is_found_as_celery_finds_it(tmp_path: Path, files: dict[str, str], spec: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    run = _oomcheck(tmp_path, "audit", "--json", "-A", spec)
    assert _settings(run)["result_expires"] == (600.0, "app")


def test_without_a_broker_anywhere_the_error_says_so(tmp_path: Path) -> None:
    (tmp_path / "bare.py").write_text("from celery import Celery\napp = Celery('bare')\n")
    run = _oomcheck(tmp_path, "-A", "bare", "check")
    assert run.returncode == 78
    assert run.stderr.startswith("oomcheck: no broker"), run.stderr


@pytest.mark.parametrize(
    ("files", "spec", "message"),
    [
        pytest.param({}, "missing", "-A missing: no module named 'missing' in ", id="no-module"),
        pytest.param(
            {"dep.py": "import not_installed_anywhere\n"},
            "dep",
            "-A dep: the app failed to import: ModuleNotFoundError: No module named "
            "'not_installed_anywhere' (",
            id="missing-dependency",
        ),
        pytest.param(
            {"boom.py": f"raise RuntimeError('cannot reach redis://:{PASSWORD}@db:6379/0')\n"},
            "boom",
            "-A boom: the app failed to import: RuntimeError: cannot reach redis://:***@db:6379/0",
            id="raises-with-password",
        ),
        pytest.param(
            {"syn.py": "app = (\n"},
            "syn",
            "-A syn: the app failed to import: SyntaxError:",
            id="syntax-error",
        ),
        pytest.param(
            {"leaves.py": "import sys\nsys.exit(3)\n"},
            "leaves",
            "-A leaves: the app failed to import: SystemExit: 3",
            id="exits",
        ),
        pytest.param(
            {"shop.py": APP}, "shop:nothere", "-A shop:nothere: shop has no attribute", id="attr"
        ),
        pytest.param(
            {"plain.py": "x = 1\n"},
            "plain:x",
            "-A plain:x: not a Celery app (found int)",
            id="not-an-app",
        ),
        pytest.param(
            {"empty.py": "x = 1\n"}, "empty", "-A empty: no Celery app there", id="no-app-in-module"
        ),
        pytest.param(
            {"bad.py": APP.replace("timedelta(minutes=10)", "'soon'")},
            "bad",
            "-A bad: result_expires must be a number of seconds",
            id="bad-value-named-by-celery-setting",
        ),
    ],
)
def test_an_app_that_cannot_be_used_is_one_line_and_exit_78(
    tmp_path: Path, files: dict[str, str], spec: str, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = _oomcheck(tmp_path, "-A", spec, "check", "--json")
    assert run.returncode == 78
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"oomcheck: {message}"), lines[0]
    _no_password(run)


def test_version(tmp_path: Path) -> None:
    run = _oomcheck(tmp_path, "--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run.returncode == 0
    assert run.stdout.startswith(f"oomcheck {version} (celery 5."), run.stdout


def test_watch_json_prints_one_document_per_line_per_check(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(APP)
    run = _oomcheck(
        tmp_path, "-A", "shop", "watch", "--json", "--interval", "0.2", "--duration", "1.2"
    )
    lines = run.stdout.splitlines()
    reports = [json.loads(line) for line in lines]
    assert len(reports) >= 2
    assert {r["mode"] for r in reports} == {"watch"}
    assert len({r["checked_at"] for r in reports}) == len(reports)
    assert all(r["settings"]["result_expires"]["value"] == 600.0 for r in reports)
