"""`make invoke EVENT=...` (python -m oomcheck.demo.invoke): the real handler, run locally on
moto and a local Redis, prints the report JSON the Lambda would return."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.template import cfn

pytestmark = pytest.mark.integration


def _invoke(event: str, **env: str) -> dict[str, Any]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OOMCHECK_", "CELERY_", "POWERTOOLS_"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "oomcheck.demo.invoke", event],
        cwd=cfn.ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    return dict(json.loads(done.stdout))


def test_audit_event_with_the_default_local_services() -> None:
    report = _invoke("events/audit.json")
    assert report["schema"] == 1 and report["mode"] == "audit"
    assert "incidents" in report and report["alerts"] == []
    assert report["sources"]["state"] == "ok"
    assert report["sources"]["exits"] == "ok"
    assert report["sources"]["alerts"].startswith("sns:arn:aws:sns:")
    assert report["stats"]["state_writes"] == 0  # an audit writes nothing


def test_scheduled_event_with_given_urls(broker_db_url: str, redis_db_url: str) -> None:
    report = _invoke(
        "events/scheduled.json",
        OOMCHECK_BROKER_URL=broker_db_url,
        OOMCHECK_RESULT_BACKEND=redis_db_url,
    )
    assert report["mode"] == "check"
    assert report["sources"]["state"] == "ok"
    assert report["sources"]["broker"] == "ok" and report["sources"]["results"] == "ok"
    assert report["stats"]["state_writes"] >= 1  # the lease, taken and given back


def test_a_bad_event_is_reported_as_lambda_reports_it(tmp_path: Any) -> None:
    event = tmp_path / "bad.json"
    event.write_text('{"mode": "nuke"}')
    done = subprocess.run(
        [sys.executable, "-m", "oomcheck.demo.invoke", str(event)],
        cwd=cfn.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["errorType"] == "InvocationError" and "unknown mode" in error["errorMessage"]
