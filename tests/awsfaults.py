"""AWS on loopback for tests: a moto server in its own process, and a proxy that breaks it.

The moto server runs single-threaded in a child process: requests are served one at a time, so a
DynamoDB conditional write is atomic as it is on AWS (moto's in-process mock and its threaded
server are not), and a race between our processes tests our lease, not moto.

``FaultProxy`` sits between a client and the server and, per request, passes it on or fails it
the way AWS fails: refused connections, 500s, throttling, a hang, or the response lost after the
server accepted the request.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from oomcheck.demo.services import LOOPBACK, free_port, port_open

_SERVE = """
import sys
from werkzeug.serving import run_simple
from moto.server import DomainDispatcherApplication, create_backend_app
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, use_reloader=False)
"""


@contextlib.contextmanager
def serial_moto(start_timeout: float = 30.0) -> Iterator[str]:
    """A moto server (one request at a time) in a child process; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, LOOPBACK, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not listen on {port}")
            time.sleep(0.05)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _throttle_reply(head: bytes) -> bytes:
    """A 400 throttling error in the protocol the request used (JSON for DynamoDB, XML for
    SNS's query protocol)."""
    if b"x-amz-target" in head.lower():
        body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
        body += b'"message":"Rate of requests exceeds the allowed throughput."}'
        kind = b"application/x-amz-json-1.0"
    else:
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            b"<Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        )
        kind = b"text/xml"
    return _reply(400, b"Bad Request", kind, body)


def _reply(status: int, reason: bytes, kind: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return head % (status, reason, kind, len(body)) + body


MODES = ("pass", "refuse", "500", "throttle", "hang", "lose_response", "delay")


@dataclass
class FaultProxy:
    """An HTTP proxy on loopback in front of ``upstream``. Set ``mode`` at any time:
    pass | refuse | 500 | throttle | hang | lose_response (forwarded, then the connection is
    dropped without the reply) | delay (forwarded after ``delay_s``). ``hang_s`` bounds a hang."""

    upstream: str
    mode: str = "pass"
    delay_s: float = 0.25
    hang_s: float = 20.0
    requests: int = 0
    forwarded: int = 0
    # called after a request reached the server (e.g. to break another service right then)
    on_forward: Callable[[], None] | None = None
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self._sock is not None
        return f"http://{LOOPBACK}:{self._sock.getsockname()[1]}"

    def start(self) -> FaultProxy:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.hang_s + 5)
            try:
                request = _read_request(conn)
            except OSError:
                return
            if request is None:
                return
            self.requests += 1
            head, body = request
            mode = self.mode
            with contextlib.suppress(OSError):
                self._answer(conn, mode, head, body)

    def _answer(self, conn: socket.socket, mode: str, head: bytes, body: bytes) -> None:
        if mode == "refuse":
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            return  # closed with a reset: the client sees a connection error
        if mode == "500":
            conn.sendall(_reply(500, b"Internal Server Error", b"text/plain", b"boom"))
            return
        if mode == "throttle":
            conn.sendall(_throttle_reply(head))
            return
        if mode == "hang":
            self._stop.wait(self.hang_s)
            return
        if mode == "delay":
            self._stop.wait(self.delay_s)
        reply = self._forward(head, body)
        if mode != "lose_response":
            conn.sendall(reply)

    def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                if name.lower() not in ("connection", "keep-alive"):
                    headers[name.strip()] = value.strip()
        host, port = self.upstream.removeprefix("http://").split(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.forwarded += 1
            if self.on_forward is not None:
                self.on_forward()
            kind = (response.getheader("Content-Type") or "text/plain").encode()
            return _reply(response.status, response.reason.encode() or b"OK", kind, payload)
        finally:
            upstream.close()


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body


__all__ = ["MODES", "FaultProxy", "port_open", "serial_moto"]
