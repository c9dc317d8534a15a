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
from collections.abc import Mapping
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
