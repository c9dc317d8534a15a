"""A password with a URL's reserved characters, typed into ``--broker`` / ``--backend`` as it is
(the README: any character, percent-encoded or not), against a Redis that requires it, with a
real worker whose own URL is correctly encoded: the CLI finds the worker through remote control
and reads the result backend, and no piece of the password (any 3 characters of it, raw or
percent-encoded) appears in stdout, stderr or the report (Issue 22, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from oomcheck.demo import services
from oomcheck.demo.workers import WorkerProcess
from oomcheck.sources.inspector import CeleryInspector

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKER = "pw@oomcheck-broker"


def _password(char: str) -> str:
    # letters and digits no output would hold by chance, the character twice
    return f"Zq8{char}Xv2Kw{char}Jr5"


def _pieces(password: str) -> set[str]:
    pieces: set[str] = set()
    for form in (password, quote(password, safe="")):
        pieces.update(form[i : i + 3] for i in range(len(form) - 2))
    return pieces


@pytest.fixture
def secured_redis(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    if services.redis_server_binary() is None:
        pytest.skip("no redis-server to start with --requirepass")
    password = _password(request.param)
    server = services.start_redis(args=["--requirepass", password])
    try:
        yield server.port, password
    finally:
        server.stop()


def _run_cli(tmp_path: Path, broker: str, backend: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    env.update(
        PYTHONPATH=str(ROOT / "layers" / "oomcheck"),
        OOMCHECK_STATE_FILE=str(tmp_path / "state.json"),
        OOMCHECK_INSPECT_TIMEOUT="1",
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "oomcheck.cli",
            "check",
            "--json",
            "--broker",
            broker,
            "--backend",
            backend,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("secured_redis", [";", "/", "@", "#", "?", "%"], indirect=True)
def test_the_cli_finds_the_worker_and_shows_no_piece_of_the_password(
    tmp_path: Path, secured_redis: tuple[int, str]
) -> None:
    port, password = secured_redis
    base = f"redis://:{{}}@127.0.0.1:{port}"
    encoded = quote(password, safe="")
    # Given a worker on the Redis that requires the password, its URLs correctly encoded
    worker = WorkerProcess(
        WORKER,
        f"{base.format(encoded)}/0",
        f"{base.format(encoded)}/1",
        log_path=str(tmp_path / "worker.log"),
    )
    inspector = CeleryInspector(f"{base.format(encoded)}/0")
    try:
        worker.start().wait_ready(inspector.app.control)
        # When oomcheck is given the password as typed, unencoded
        run = _run_cli(tmp_path, f"{base.format(password)}/0", f"{base.format(password)}/1")
    finally:
        worker.stop()
        inspector.close()

    # Then it sees the worker and reads both databases
    assert "Traceback" not in run.stderr, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    assert [w["name"] for w in report["workers"]] == [WORKER], report["sources"]
    assert report["sources"]["inspect"] == "ok"
    assert report["sources"]["results"] == "ok"
    assert report["sources"]["broker"] == "ok"
    # and no piece of the password is anywhere in what it printed
    leaked = sorted(p for p in _pieces(password) if p in run.stdout or p in run.stderr)
    assert leaked == [], leaked
