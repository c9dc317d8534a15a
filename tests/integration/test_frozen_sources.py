"""Every run ends inside its deadline, with a report, when a broker or backend accepts TCP and
never answers (a frozen host, a full listen queue behind a load balancer)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomcheck.config.settings import Settings
from oomcheck.deadline import Deadline
from oomcheck.model import SourceState
from oomcheck.runner import run_once
from oomcheck.wiring import build_deps

pytestmark = pytest.mark.integration

DEADLINE_S = 8.0


@pytest.fixture
def frozen_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _timed_check(broker: str, backend: str, tmp_path: Path) -> tuple[float, dict[str, object]]:
    settings = Settings(
        broker_url=broker, result_backend=backend, state_file=str(tmp_path / "state.json")
    )
    deps = build_deps(settings, budget_s=DEADLINE_S)
    started = time.monotonic()
    report = run_once(deps, "check", Deadline.after(DEADLINE_S, deps.monotonic))
    took = time.monotonic() - started
    print(f"check took {took:.2f} s of its {DEADLINE_S:.0f} s deadline")
    return took, report.sources


def test_frozen_redis_broker(frozen_port: int, redis_db_url: str, tmp_path: Path):
    took, sources = _timed_check(f"redis://127.0.0.1:{frozen_port}/0", redis_db_url, tmp_path)
    assert took < DEADLINE_S
    assert sources["inspect"].state is SourceState.ERROR
    assert sources["broker"].state is SourceState.ERROR
    # the state is saved: the next run starts from it, and no lease is left held
    assert sources["state"].state is SourceState.OK
    assert (tmp_path / "state.json").exists()


def test_frozen_result_backend(frozen_port: int, broker_db_url: str, tmp_path: Path):
    took, sources = _timed_check(broker_db_url, f"redis://127.0.0.1:{frozen_port}/1", tmp_path)
    assert took < DEADLINE_S
    assert sources["results"].state is SourceState.ERROR
    assert sources["inspect"].state is SourceState.OK
    assert sources["state"].state is SourceState.OK


def test_frozen_rabbitmq_broker(frozen_port: int, redis_db_url: str, tmp_path: Path):
    broker = f"amqp://guest:guest@127.0.0.1:{frozen_port}//"
    took, sources = _timed_check(broker, redis_db_url, tmp_path)
    assert took < DEADLINE_S
    assert sources["inspect"].state is SourceState.ERROR
    assert sources["results"].state is SourceState.OK
    assert sources["state"].state is SourceState.OK
