"""`oomcheck -A shop` against real workers of an app whose configuration differs from oomcheck's
defaults (key prefixes on both Redis databases, result_expires 600, visibility_timeout 900): the
ages and redelivery times in the report must come from the app's settings, as a user who never
restated them in OOMCHECK_* variables would read them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from oomcheck.demo.workers import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESULT_EXPIRES = 600
VISIBILITY = 900

APP = """
import time
from celery import Celery

app = Celery("{name}", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_track_started=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires={expires},
    broker_transport_options={{"global_keyprefix": "shop:", "visibility_timeout": {visibility}}},
    result_backend_transport_options={{"global_keyprefix": "shopres:"}},
)


@app.task(name="shop.sleepy")
def sleepy(seconds):
    time.sleep(seconds)


@app.task(name="shop.sleepy_late", acks_late=True)
def sleepy_late(seconds):
    time.sleep(seconds)
"""


def _oomcheck(cwd: Path, *args: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    clean["PYTHONPATH"] = str(ROOT / "layers" / "oomcheck")
    clean.update(OOMCHECK_INSPECT_TIMEOUT="0.5", OOMCHECK_REPING_TIMEOUT="0.5", **env)
    run = subprocess.run(
        [sys.executable, "-m", "oomcheck.cli", *args, "--json"],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return dict(json.loads(run.stdout))


def _orphaned_tasks(report: dict[str, Any], worker: str) -> dict[str, dict[str, Any]]:
    found = [f for f in report["findings"] if f["kind"] == "task_orphaned"]
    assert [f["worker"] for f in found] == [worker], report["findings"]
    return {t["id"]: t for t in found[0]["tasks"]}


def test_ages_and_redelivery_times_come_from_the_apps_settings(
    tmp_path: Path, redis_db_url: str, broker_db_url: str
) -> None:
    from celery import Celery

    # Given an app module of the user's own, with non-default prefixes and expiries
    name = f"shop_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{name}.py").write_text(
        APP.format(
            name=name,
            broker=broker_db_url,
            backend=redis_db_url,
            expires=RESULT_EXPIRES,
            visibility=VISIBILITY,
        )
    )
    client = Celery("client", broker=broker_db_url, backend=redis_db_url, set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": "shop:"}
    client.conf.result_backend_transport_options = {"global_keyprefix": "shopres:"}
    worker = WorkerProcess(
        "victim@oomcheck-cli",
        broker_db_url,
        redis_db_url,
        concurrency=2,
        app=name,
        cwd=str(tmp_path),
        log_path=str(tmp_path / "worker.log"),
    )
    backend = redis.Redis.from_url(redis_db_url)
    broker = redis.Redis.from_url(broker_db_url)
    try:
        worker.start().wait_ready(client.control)
        # and a worker running a plain task and an acks_late task
        sent_at = time.time()
        plain = client.send_task("shop.sleepy", args=[120]).id
        late = client.send_task("shop.sleepy_late", args=[120]).id

        def started() -> bool:
            values = [backend.get(f"shopres:celery-task-meta-{t}") or b"" for t in (plain, late)]
            return all(b'"STARTED"' in v for v in values)

        wait_for(started, 30, what="STARTED records under the app's result prefix")
        seen_started_at = time.time()
        # When the whole worker dies before oomcheck ever saw it
        worker.kill(signal.SIGKILL)
        assert worker.wait() is not None
        fetched = {
            json.loads(body)[0]["headers"]["id"]: broker.zscore("shop:unacked_index", tag)
            for tag, body in broker.hgetall("shop:unacked").items()
        }
        assert set(fetched) == {late}, fetched  # the plain task was acked when it started

        report = _oomcheck(
            tmp_path, "-A", name, "check", OOMCHECK_STATE_FILE=str(tmp_path / "state.json")
        )
    finally:
        worker.stop()
        client.close()
        backend.close()
        broker.close()

    # Then both tasks are named with the time they started (from the TTL the app's
    # result_expires gave their records, read under its prefix), and the acks_late one with the
    # time the broker will redeliver it (fetched + the app's visibility_timeout)
    tasks = _orphaned_tasks(report, "victim@oomcheck-cli")
    assert set(tasks) == {plain, late}
    for task in tasks.values():
        assert task["state"] == "STARTED"
        assert sent_at - 1.0 <= task["started_at"] <= seen_started_at + 1.0, task
    assert tasks[late]["verdict"] == "awaiting_redelivery"
    assert tasks[late]["redeliver_at"] == pytest.approx(fetched[late] + VISIBILITY, abs=0.01)
    settings = report["settings"]
    assert settings["visibility_timeout"] == {
        "value": VISIBILITY,
        "from": "app, visibility_timeout",
    }
    assert settings["result_expires"] == {"value": RESULT_EXPIRES, "from": "app"}

    # An environment variable beats the app (read-only audits from here on)
    audit = _oomcheck(
        tmp_path,
        "-A",
        name,
        "audit",
        OOMCHECK_STATE_FILE=str(tmp_path / "state.json"),
        OOMCHECK_VISIBILITY_TIMEOUT="1234",
    )
    again = _orphaned_tasks(audit, "victim@oomcheck-cli")
    assert again[late]["redeliver_at"] == pytest.approx(fetched[late] + 1234, abs=0.01)
    assert audit["settings"]["visibility_timeout"]["from"] == "env OOMCHECK_VISIBILITY_TIMEOUT"

    # Without -A (the URLs alone) the prefixed records are not where oomcheck looks
    bare = _oomcheck(
        tmp_path,
        "audit",
        OOMCHECK_STATE_FILE=str(tmp_path / "bare.json"),
        OOMCHECK_BROKER_URL=broker_db_url,
        OOMCHECK_RESULT_BACKEND=redis_db_url,
    )
    assert bare["stats"]["started_tasks"] == 0
    assert not [f for f in bare["findings"] if f["kind"] == "task_orphaned"]
