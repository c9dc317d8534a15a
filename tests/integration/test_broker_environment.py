"""A shell with the workers' env file loaded: ``CELERY_BROKER_URL`` (and its read/write forms)
name another database than ``--broker``. Remote control must still ask the broker the report's
settings name, or a live fleet is reported as "no workers, inspect ok" while the broadcasts go to
a database nobody listens on (Issue 22, item 1).

tests/conftest.py clears ``CELERY_*`` for every test; this one sets them on purpose, in the CLI
process's environment only (the worker's has none)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from oomcheck.demo.workers import WorkerProcess
from oomcheck.sources.inspector import CeleryInspector

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKER = "envtest@oomcheck-broker"


def _kombu_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(set(client.keys("_kombu*")) | set(client.keys("*pidbox*")))
    finally:
        client.close()


def test_celery_broker_url_in_the_environment_does_not_divert_remote_control(
    tmp_path: Path, broker_db_url: str, redis_db_url: str
) -> None:
    # Given a live worker on the broker database, and the result database as "the other broker"
    worker = WorkerProcess(
        WORKER, broker_db_url, redis_db_url, log_path=str(tmp_path / "worker.log")
    )
    inspector = CeleryInspector(broker_db_url)
    try:
        worker.start().wait_ready(inspector.app.control)
        assert _kombu_keys(redis_db_url) == []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
        env.update(
            PYTHONPATH=str(ROOT / "layers" / "oomcheck"),
            OOMCHECK_STATE_FILE=str(tmp_path / "state.json"),
            OOMCHECK_INSPECT_TIMEOUT="1",
            CELERY_BROKER_URL=redis_db_url,
            CELERY_BROKER_READ_URL=redis_db_url,
            CELERY_BROKER_WRITE_URL=redis_db_url,
        )
        # When oomcheck checks the broker named on its command line
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "oomcheck.cli",
                "check",
                "--json",
                "--broker",
                broker_db_url,
                "--backend",
                redis_db_url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        worker.stop()
        inspector.close()

    # Then the worker is seen there, and nothing of remote control reached the other database
    assert "Traceback" not in run.stderr, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    assert report["sources"]["inspect"] == "ok"
    assert [w["name"] for w in report["workers"]] == [WORKER], report["workers"]
    assert report["settings"]["broker_url"]["from"] == "flag --broker"
    assert _kombu_keys(redis_db_url) == []
