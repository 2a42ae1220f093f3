"""The lab holder's control socket: other processes change impairments, read live counters,
run commands in VM nodes and take the lab down.

The process that holds a lab (`tunlab up`, its supervisor, a test) owns the relays, so it is
the one that can change them. It serves a Unix socket next to the lab's state file (mode 0600)
with one JSON request and one JSON answer per connection, each connection on its own thread
(a client that stays connected, or a long exec, never holds up an impair):
  {"op": "impair", "link": "h1:eth0", "impair": {...} | null, "direction": null}
  {"op": "links"}  -> every link's placement, impairment and counters
  {"op": "exec", "node": ..., "argv": [...]}, {"op": "down"}
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunlab.errors import LabError, TunlabError

MAX_REQUEST = 4 << 20
MAX_CLIENTS = 32  # connections served at once; more are told the holder is busy
READ_TIMEOUT = 10.0  # seconds a client may take to send its request
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serve requests on path in a daemon thread until close()."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead holder's socket with this lab's name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._closing = False
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._thread = threading.Thread(target=self._serve, name=f"tunlab-control-{path.stem}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with conn, contextlib.suppress(OSError):
                    busy = {"ok": False, "error": f"the holder is serving {MAX_CLIENTS} requests; try again"}
                    conn.sendall(json.dumps(busy).encode() + b"\n")
                continue
            threading.Thread(
                target=self._answer, args=(conn,), name=f"{self._thread.name}-conn", daemon=True
            ).start()

    def _answer(self, conn: socket.socket) -> None:
        """One connection: read its request (READ_TIMEOUT), run the handler, send the answer."""
        try:
            with conn:
                conn.settimeout(READ_TIMEOUT)
                try:
                    request = _read(conn)
                    conn.settimeout(None)  # the handler takes what it takes (an exec: its timeout)
                    answer = self.handler(request)
                except TimeoutError:
                    return  # a client that never finished its request
                except ValueError as exc:
                    answer = {"ok": False, "error": str(exc), "bad_input": True}
                except TunlabError as exc:  # said on purpose: the message is for the user as it is
                    answer = {"ok": False, "error": str(exc), "bad_input": False}
                except Exception as exc:  # the lab keeps running whatever one request does
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "bad_input": False}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer, default=str).encode() + b"\n")
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop accepting (requests being answered finish on their threads); safe to call from
        a handler (a `down` request closes the server it came through)."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"request larger than {MAX_REQUEST} bytes")
    message = json.loads(data or b"{}")
    if not isinstance(message, dict):
        raise ValueError("a request is a JSON object")
    return message


def request(path: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a lab holder; LabError when nobody answers there (or not within
    timeout seconds)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise LabError(
                f"the lab's holder does not answer on {path} ({exc.strerror or exc}): is it still up?"
            ) from None
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise LabError(
                    f"the lab's holder did not answer {message.get('op')!r} within {timeout:g} s"
                ) from None
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    answer = json.loads(data or b"{}")
    if not isinstance(answer, dict):
        raise LabError("the lab's holder sent a malformed answer")
    return answer
