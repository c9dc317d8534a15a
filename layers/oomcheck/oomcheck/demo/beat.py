"""A real ``celery beat -S redbeat.RedBeatScheduler`` process for the beat demo and tests: the
demo app (oomcheck.demo.tasks) with its schedule given as JSON (see OOMCHECK_DEMO_BEAT_SCHEDULE
there)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BeatProcess:
    broker: str
    # entry name -> {"task": ..., "every": seconds, "args": [...]}
    schedule: Mapping[str, Mapping[str, Any]]
    key_prefix: str = "redbeat:"
    lock_timeout_s: int = 5
    log_path: str | None = None
    cwd: str | None = None
    process: subprocess.Popen[bytes] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def start(self) -> BeatProcess:
        env = {
            **os.environ,
            "OOMCHECK_DEMO_BROKER": self.broker,
            "OOMCHECK_DEMO_BEAT_SCHEDULE": json.dumps(dict(self.schedule)),
            "OOMCHECK_DEMO_REDBEAT_PREFIX": self.key_prefix,
            "OOMCHECK_DEMO_REDBEAT_LOCK_TIMEOUT": str(self.lock_timeout_s),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "oomcheck.demo.tasks:app",
            "beat",
            "-S",
            "redbeat.RedBeatScheduler",
            "-l",
            "info",
        ]
        log = Path(self.log_path or os.devnull).open("ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            argv, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer or a container runtime does: beat's lock stays."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


# ---------------------------------------------------------------------------------------------
# `oomcheck demo --beat`: beat killed, the alert naming the jobs that stopped, then resolved

DEMO_SCHEDULE = {
    "send-invoices": {"task": "demo.pid", "every": 2},
    "sync-inventory": {"task": "demo.pid", "every": 3},
    "nightly-report": {"task": "demo.pid", "every": 86400},
}
DEMO_GRACE_S = 3.0
DEMO_DEADLINE_S = 40.0


def run_beat_demo(out: Callable[[str], None] | None = None) -> int:
    """A real beat (RedBeat) on a private redis-server sends three periodic jobs; it is
    SIGKILLed; checks once a second until beat_stopped names the jobs that stopped; beat comes
    back and the incident is resolved. 0 when all of that happened in time."""
    import tempfile

    from oomcheck.config.settings import Settings
    from oomcheck.demo import services
    from oomcheck.model import Kind, Mode, Policy
    from oomcheck.runner import run_once
    from oomcheck.wiring import build_deps

    say = out or print
    server = services.start_redis()
    broker = f"redis://127.0.0.1:{server.port}/0"
    messages: list[Any] = []
    beat: BeatProcess | None = None
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            broker_url=broker,
            state_file=f"{tmp}/state.json",
            beat_scheduler="redbeat.RedBeatScheduler",
            policy=Policy(beat_grace_s=DEMO_GRACE_S),
        )
        deps = build_deps(settings)
        deps.publisher = _Capture(messages)
        try:
            beat = BeatProcess(broker, DEMO_SCHEDULE, cwd=tmp, lock_timeout_s=4).start()
            say(
                f"beat (RedBeat) started, pid {beat.process.pid if beat.process else '?'}: "
                f"{', '.join(DEMO_SCHEDULE)}"
            )
            if not _until(lambda: bool(run_once(deps, Mode.AUDIT).schedule), DEMO_DEADLINE_S):
                say("beat did not write its schedule in time")
                return 1
            time.sleep(DEMO_GRACE_S)
            say(f"healthy check: {[f.kind.value for f in run_once(deps, Mode.CHECK).findings]}")
            beat.kill()
            say("beat SIGKILLed (as the OOM killer does); checking once a second...")
            if not _until(lambda: _alerted(messages, "open"), DEMO_DEADLINE_S, deps):
                say("no beat_stopped alert in time")
                return 1
            opened = next(m for m in messages if m.kind is Kind.BEAT_STOPPED)
            say(f"\nALERT {opened.subject}\n{opened.text}\n")
            beat = BeatProcess(broker, DEMO_SCHEDULE, cwd=tmp, lock_timeout_s=4).start()
            say("beat started again; it waits for the dead beat's lock to expire...")
            if not _until(lambda: _alerted(messages, "resolve"), DEMO_DEADLINE_S, deps):
                say("beat_stopped was not resolved in time")
                return 1
            resolved = [m for m in messages if m.kind is Kind.BEAT_STOPPED][-1]
            say(f"RESOLVED {resolved.subject}")
            return 0
        finally:
            if beat is not None:
                beat.stop()
            if deps.inspector is not None:
                deps.inspector.close()
            server.stop()


class _Capture:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def describe(self) -> str:
        return "demo"

    def publish(self, message: Any) -> str:
        self.messages.append(message)
        return f"m-{len(self.messages)}"


def _alerted(messages: list[Any], action: str) -> bool:
    return any(m.kind.value == "beat_stopped" and m.action.value == action for m in messages)


def _until(done: Callable[[], bool], timeout: float, deps: Any = None) -> bool:
    """Until ``done()`` (with ``deps``: after a check each second); bounded by ``timeout``."""
    from oomcheck.model import Mode
    from oomcheck.runner import run_once

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deps is not None:
            run_once(deps, Mode.CHECK)
        if done():
            return True
        time.sleep(1.0)
    return False
