"""Real Celery worker processes for the demo and the tests, optionally in a memory cgroup.

A memory cgroup makes the OOM kill real: the kernel, not us, SIGKILLs the process that exceeds
the limit. cgroup v1 (/sys/fs/cgroup/memory) and v2 (a unified hierarchy) both work; without a
writable one (not root, a read-only /sys), callers fall back to SIGKILL and say so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class MemoryCgroup:
    """A memory cgroup of our own. ``group_kill`` asks the kernel (v2) to kill every process in
    it on OOM, as Kubernetes does; on v1 the supervisor emulates that."""

    path: Path
    version: int

    @classmethod
    def create(cls, limit_bytes: int, *, group_kill: bool = False) -> MemoryCgroup:
        name = f"oomcheck-{uuid.uuid4().hex[:8]}"
        if (CGROUP_V1 / "memory.limit_in_bytes").exists():
            path = CGROUP_V1 / name
            path.mkdir()
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            # No swap to hide in: the limit must bite (ignored where swap accounting is off).
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            return cls(path, 1)
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory")
            path = CGROUP_ROOT / name
            path.mkdir()
            (path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
            if group_kill:
                (path / "memory.oom.group").write_text("1")
            return cls(path, 2)
        raise OSError("no memory cgroup hierarchy found under /sys/fs/cgroup")

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this group so far."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def usage_bytes(self) -> int:
        """The memory the kernel charges to the group now (what the OOM decision follows):
        ``memory.usage_in_bytes`` on v1, ``memory.current`` on v2."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text().strip())

    def limit_bytes(self) -> int:
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return int((self.path / name).read_text().strip())

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 10.0) -> None:
        self.kill_all()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # the kernel frees a cgroup only after its last process exits
            else:
                return


def memory_cgroup_available() -> tuple[bool, str]:
    """Whether a memory cgroup can be made here, and if not, why (one line)."""
    try:
        probe = MemoryCgroup.create(256 * 1024 * 1024)
    except PermissionError:
        return False, "no permission to create a memory cgroup (not root?)"
    except OSError as exc:
        return False, f"no writable memory cgroup: {exc.strerror or exc}"
    probe.remove()
    return True, f"cgroup v{probe.version}"


@dataclass
class WorkerProcess:
    """One `celery worker` subprocess of the demo app."""

    name: str
    broker: str
    backend: str
    pool: str = "prefork"
    concurrency: int = 1
    cgroup: MemoryCgroup | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: str | None = None
    # another app than the demo's (`celery -A` form), imported from ``cwd`` as celery does
    app: str = "oomcheck.demo.tasks:app"
    cwd: str | None = None

    def start(self) -> WorkerProcess:
        env = {
            **os.environ,
            "OOMCHECK_DEMO_BROKER": self.broker,
            "OOMCHECK_DEMO_BACKEND": self.backend,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-n",
            self.name,
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ]
        if self.cgroup is not None:
            # Join the cgroup before exec so that the pool children forked at start are in it.
            argv = [
                "/bin/sh",
                "-c",
                f'echo $$ > "{self.cgroup.procs_file}" && exec "$@"',
                "sh",
                *argv,
            ]
        log = Path(self.log_path or os.devnull).open("ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, control: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Until the worker answers a direct stats(); returns its stats."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}")
            reply = control.inspect(destination=[self.name], timeout=0.5, limit=1).stats() or {}
            if self.name in reply:
                return dict(reply[self.name])
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} did not answer within {timeout} s")

    def kill(self, sig: int = signal.SIGKILL, *, whole_group: bool = True) -> None:
        """SIGKILL the main process, and with ``whole_group`` its pool children too, as a
        container runtime does when a container dies."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Make sure nothing of this worker survives (tests' teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGKILL)
            self.wait(10)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.remove()


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Poll until ``predicate()`` is truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
