"""New workers on RabbitMQ within a check (issue 17, item 7): with the management API the broker's
listing of pidbox queues names a worker started since the last discovery, and it is asked in the
same check; without it, a STARTED record that names an unknown worker does. A management API
that is unreachable or answers garbage is a degraded source in one line, the check goes on, and
its password appears nowhere."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from oomcheck.demo.services import LOOPBACK
from oomcheck.model import Kind, SourceState
from tests.integration.conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]

API = f"http://{LOOPBACK}:15672"
ROOT = Path(__file__).resolve().parents[2]


def _api_or_skip() -> str:
    request = urllib.request.Request(
        f"{API}/api/overview",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            reply.read()
    except OSError:
        pytest.skip(
            "RabbitMQ's management API is not reachable on 127.0.0.1:15672 "
            "(rabbitmq-plugins enable rabbitmq_management)"
        )
    return API


def _names(report: Any) -> list[str]:
    return sorted(w["name"] for w in report.workers)


def _started_between_two_checks(fleet: Fleet, tag: str) -> Any:
    """A fleet of one, checked (a discovery: the next is 300 s away), then a second worker (solo)
    on a queue of its own; returns the second worker."""
    fleet.queue = f"first-{tag}"
    fleet.start("first@oomcheck-test", pool="prefork")
    assert _names(fleet.check()) == ["first@oomcheck-test"]
    fleet.queue = f"second-{tag}"
    return fleet.start("second@oomcheck-test", pool="solo")


def test_with_the_api_a_worker_started_between_two_checks_is_listed_and_its_death_lost(
    rabbitmq_fleet: Fleet,
) -> None:
    fleet = rabbitmq_fleet
    fleet.overrides["rabbitmq_api_url"] = _api_or_skip()
    # Given a worker started after the first check, idle: no STARTED record names it
    second = _started_between_two_checks(fleet, uuid.uuid4().hex[:6])
    # When the next check runs
    report = fleet.check()
    # Then the broker's listing names it and it is asked in this check
    assert _names(report) == ["first@oomcheck-test", "second@oomcheck-test"], (
        report.sources,
        report.stats,
    )
    assert report.stats["new_workers_asked"] == 1
    assert report.sources["newcomers"].state is SourceState.OK
    # And its SIGKILL death in the middle of a task is a worker_lost naming the task
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    second.kill(signal.SIGKILL)
    second.wait()
    time.sleep(1.0)  # RabbitMQ drops the dead connection's exclusive queues within a second
    report = fleet.check()
    lost = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert [f.worker for f in lost] == ["second@oomcheck-test"], report.findings
    assert [t.id for t in lost[0].tasks] == [task]
    # and the listing, from which its queue is gone, asks nobody
    assert report.stats["new_workers_asked"] == 0


def test_the_healthy_check_with_the_api_stays_in_milliseconds(rabbitmq_fleet: Fleet) -> None:
    fleet = rabbitmq_fleet
    fleet.overrides["rabbitmq_api_url"] = _api_or_skip()
    fleet.start("only@oomcheck-test", pool="prefork")
    fleet.check()  # the discovery
    durations = [fleet.check().duration_ms for _ in range(5)]
    # the inspect timeout is 1 s: a check that waited for a reply would take over 1,000 ms
    assert sorted(durations)[2] < 500, durations


def test_without_the_api_a_started_record_names_the_newcomer(rabbitmq_fleet: Fleet) -> None:
    fleet = rabbitmq_fleet
    # Given a prefork worker started after the first check, running a task (its STARTED record
    # names it); RabbitMQ without the management API lists no queues
    tag = uuid.uuid4().hex[:6]
    fleet.queue = f"first-{tag}"
    fleet.start("first@oomcheck-test", pool="prefork")
    assert _names(fleet.check()) == ["first@oomcheck-test"]
    fleet.queue = f"second-{tag}"
    second = fleet.start("second@oomcheck-test", pool="prefork")
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    # When the next check runs
    report = fleet.check()
    # Then the STARTED record's worker is asked by name in this check, and listed
    assert _names(report) == ["first@oomcheck-test", "second@oomcheck-test"]
    newcomers = report.sources["newcomers"]
    assert newcomers.state is SourceState.OFF
    assert "OOMCHECK_RABBITMQ_API_URL" in newcomers.detail
    assert not [f for f in report.findings if f.kind == Kind.TASK_ORPHANED], report.findings
    # And its death (the whole worker SIGKILLed) is a worker_lost naming its task
    second.kill(signal.SIGKILL)
    second.wait()
    time.sleep(1.0)
    report = fleet.check()
    lost = [f for f in report.findings if f.kind == Kind.WORKER_LOST]
    assert [f.worker for f in lost] == ["second@oomcheck-test"], report.findings
    assert [t.id for t in lost[0].tasks] == [task]


@pytest.mark.parametrize("api", [False, True], ids=["api-off", "api-on"])
def test_a_newcomer_busy_in_a_solo_task_is_not_an_orphan(rabbitmq_fleet: Fleet, api: bool) -> None:
    fleet = rabbitmq_fleet
    if api:
        fleet.overrides["rabbitmq_api_url"] = _api_or_skip()
    # Given a solo worker started after the first check and busy in a task: it answers nothing
    _started_between_two_checks(fleet, uuid.uuid4().hex[:6])
    task = fleet.send("demo.sleepy", 120)
    fleet.wait_started(task)
    # When checks run, its STARTED record names a worker the roster does not know
    for _ in range(2):
        report = fleet.check()
        # Then its pidbox queue, still held (405), says it is busy, not gone with its task
        assert not [f for f in report.findings if f.kind == Kind.TASK_ORPHANED], report.findings


class _Garbage(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, bytes]] = {
        "/html/api/queues": b"<html><body>Sign in</body></html>",
        "/huge/api/queues": b'{"items": [' + b'"x",' * 400_000 + b'"x"]}',
        "/nested/api/queues": b'{"items": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "/error/api/queues": b'{"error": "not_authorised", "reason": "Not management user"}',
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body = next((b for p, b in self.bodies.items() if path.startswith(p)), b"")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def garbage_api() -> Iterator[str]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        pytest.param("/html", "is not JSON", id="html"),
        pytest.param("/huge", "is over 512 KiB", id="huge"),
        pytest.param("/nested", "nests too deep", id="nested"),
        pytest.param("/error", "not a page of queues", id="error-object"),
        pytest.param(None, "unreachable", id="closed-port"),
    ],
)
def test_an_api_that_fails_is_a_degraded_source_and_the_check_goes_on(
    rabbitmq_fleet: Fleet, garbage_api: str, where: str | None, why: str
) -> None:
    fleet = rabbitmq_fleet
    # a port nothing listens on: the garbage server's, once it is closed, is not ours to rely on
    base = garbage_api + where if where is not None else f"http://{LOOPBACK}:9"
    fleet.overrides["rabbitmq_api_url"] = base.replace("http://", "http://mon:Zq8Xv2KwJr5@")
    fleet.start("only@oomcheck-test", pool="prefork")
    report = fleet.check()
    newcomers = report.sources["newcomers"]
    assert newcomers.state is SourceState.ERROR
    assert why in newcomers.detail
    assert "\n" not in newcomers.detail and "Zq8Xv2KwJr5" not in newcomers.detail
    assert _names(report) == ["only@oomcheck-test"]
    assert report.sources["inspect"].state is SourceState.OK


def test_the_api_password_appears_nowhere_in_the_clis_output(
    rabbitmq_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = rabbitmq_fleet
    _api_or_skip()
    fleet.start("only@oomcheck-test", pool="prefork")
    # Given the API's URL with a password the broker refuses (401)
    password = "Zq8;Xv2@Kw#Jr5"
    api_url = f"http://mon:{password}@{LOOPBACK}:15672"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMCHECK_", "CELERY_"))}
    env.update(
        PYTHONPATH=str(ROOT / "layers" / "oomcheck"),
        OOMCHECK_STATE_FILE=str(tmp_path / "state.json"),
        OOMCHECK_INSPECT_TIMEOUT="1",
        OOMCHECK_RABBITMQ_API_URL=api_url,
    )
    # When the CLI checks
    run = subprocess.run(
        [sys.executable, "-m", "oomcheck.cli", "check", "--json", "--broker", fleet.broker],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then the source says why in one line, the worker is found, and the password is nowhere
    assert "Traceback" not in run.stderr, run.stderr
    report = json.loads(run.stdout)
    assert report["sources"]["newcomers"].endswith(": the management API answered HTTP 401")
    assert [w["name"] for w in report["workers"]] == ["only@oomcheck-test"]
    for piece in ("Zq8", "Xv2", "Kw#", "Jr5", "Kw%23"):
        assert piece not in run.stdout and piece not in run.stderr
