"""Messages to a running pump: newline-delimited JSON over a pipe it polls with its devices.

The relay keeps the writing end; the pump (a thread, or a worker process that inherited the
reading end) takes messages between batches: a stage's new settings, or stop. The pipe is
what wakes a pump blocked on an idle device (a socket pair on Windows, where only sockets poll).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any


class Control:
    """The pump's end: fileno() to poll, messages() to take what arrived (never blocks)."""

    def __init__(self, fd: int, sock: socket.socket | None = None) -> None:
        self._fd = fd
        self._sock = sock
        self._buf = b""
        if sock is None:
            os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def _read(self) -> bytes:
        if self._sock is not None:
            return self._sock.recv(65536)
        return os.read(self._fd, 65536)

    def messages(self) -> list[dict[str, Any]]:
        """Every complete message waiting; a closed writer reads as {"op": "stop"}."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                chunk = self._read()
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                out.append({"op": "stop"})
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()] + out

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


class ControlWriter:
    """The relay's end: send(message) writes one whole line (blocking)."""

    def __init__(self, fd: int, sock: socket.socket | None = None) -> None:
        self._fd = fd
        self._sock = sock

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if self._sock is not None:
            self._sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


def control_pipe() -> tuple[Control, ControlWriter]:
    """A (reader, writer) pair; both ends close-on-exec (a worker gets the reader passed)."""
    if os.name == "nt":
        a, b = socket.socketpair()
        a.setblocking(False)
        return Control(a.fileno(), a), ControlWriter(b.fileno(), b)
    r, w = os.pipe()
    return Control(r), ControlWriter(w)
