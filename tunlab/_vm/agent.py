"""The host side of tunlab's guest agent: commands over a virtio-serial port (a socketpair).

One request per line — `ID TIMEOUT STDIN ENV ARG...`, each field base64 ("-" when empty) —
and one answer per line, `ID CODE STDOUT STDERR`; several commands run at once. The agent
announces itself with `0 READY <kernel release>`.
"""

from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tunlab.errors import LabError


@dataclass(frozen=True)
class Answer:
    code: int
    stdout: bytes
    stderr: bytes


def _enc(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "-"


def _dec(field: str) -> bytes:
    return b"" if field == "-" else base64.b64decode(field)


class AgentTimeout(TimeoutError):
    """A command in the guest did not finish in time (the agent killed it)."""


class Agent:
    """Talk to one guest's agent over `sock` (the host end of the port's socketpair)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.kernel: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list[Answer]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"tunlab-agent-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._answer(line.decode(errors="replace").split())
        self._closed = True
        self._ready.set()
        with self._lock:
            for event, _box in self._pending.values():
                event.set()

    def _answer(self, parts: list[str]) -> None:
        if len(parts) >= 2 and parts[0] == "0" and parts[1] == "READY":
            self.kernel = parts[2] if len(parts) > 2 else ""
            self._ready.set()
            return
        if len(parts) != 4 or not parts[0].isdigit():
            return  # not ours (a stray line on the port)
        with self._lock:
            entry = self._pending.pop(int(parts[0]), None)
        if entry is not None:
            entry[1].append(Answer(int(parts[1]), _dec(parts[2]), _dec(parts[3])))
            entry[0].set()

    @property
    def closed(self) -> bool:
        """The guest's end of the port went away (qemu exited)."""
        return self._closed

    def wait_ready(self, timeout: float) -> bool:
        """Until the agent said READY (True), the port closed or timeout passed (False)."""
        if self._closed:
            time.sleep(min(timeout, 0.05))  # nothing more will come: do not spin
            return False
        return self._ready.wait(timeout) and not self._closed

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Answer:
        """Run argv in the guest (by path lookup, no shell); AgentTimeout after timeout s."""
        if not argv:
            raise ValueError("argv is empty")
        if self._closed:
            raise LabError(f"VM node '{self.name}': its agent is gone (the guest stopped?)")
        seconds = 0 if timeout is None else max(1, int(timeout + 0.999))
        env_text = "".join(f"{k}={v}\n" for k, v in (env or {}).items()).encode()
        ident = next(self._ids)
        event = threading.Event()
        box: list[Answer] = []
        with self._lock:
            self._pending[ident] = (event, box)
        fields = [str(ident), str(seconds), _enc(input or b""), _enc(env_text)] + [
            _enc(a.encode()) for a in argv
        ]
        start = time.monotonic()
        try:
            self.sock.sendall((" ".join(fields) + "\n").encode())
        except OSError as exc:
            raise LabError(f"VM node '{self.name}': cannot reach its agent ({exc})") from None
        # the agent enforces the timeout; allow for the port's latency on top
        if not event.wait(None if timeout is None else timeout + 10) or not box:
            with self._lock:
                self._pending.pop(ident, None)
            if self._closed:
                raise LabError(f"VM node '{self.name}': the guest went away while running {argv[0]!r}")
            raise AgentTimeout(f"{argv[0]!r} in VM node '{self.name}' did not finish within {timeout} s")
        answer = box[0]
        if timeout is not None and answer.code == 137 and time.monotonic() - start >= seconds - 0.5:
            raise AgentTimeout(f"{argv[0]!r} in VM node '{self.name}' did not finish within {timeout} s")
        return answer

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(2)
