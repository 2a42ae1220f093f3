"""InterruptEvent: wake a thread blocked on a device from another thread (a pipe + poll)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable


class InterruptEvent:
    """A level-triggered event another thread waits on together with a device.

    trigger() makes every current and future wait fail with InterruptedError until reset().
    Its fd is a pipe (a socket pair on Windows, where select() only takes sockets).
    """

    def __init__(self) -> None:
        self._socks: tuple[socket.socket, socket.socket] | None = None
        if os.name == "nt":
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self._socks = (a, b)
            r, w = a.fileno(), b.fileno()
        else:
            r, w = os.pipe()  # non-inheritable (O_CLOEXEC) as every fd Python creates
            os.set_blocking(r, False)
            os.set_blocking(w, False)
        self._r, self._w = r, w
        self._lock = threading.Lock()
        self._triggered = False
        self._observers: list[Callable[[bool], None]] = []

    def observe(self, callback: Callable[[bool], None]) -> None:
        """Call callback(triggered) now and on every trigger() and reset(): where a wait takes
        OS handles, not fds (Windows), a backend mirrors the event into one this way."""
        with self._lock:
            self._observers.append(callback)
            callback(self._triggered)

    def fileno(self) -> int:
        """The fd that becomes readable once triggered (for select/poll/event loops)."""
        return self._r

    @property
    def is_triggered(self) -> bool:
        """Whether trigger() was called since the last reset()."""
        return self._triggered

    def trigger(self) -> None:
        """Wake every wait on this event (they raise InterruptedError); it stays set until reset()."""
        with self._lock:
            if self._closed():
                raise ValueError("trigger() on a closed InterruptEvent")
            if not self._triggered:
                self._triggered = True
                if self._socks is not None:
                    self._socks[1].send(b"\x01")
                else:
                    os.write(self._w, b"\x01")
                for callback in self._observers:
                    callback(True)

    def reset(self) -> None:
        """Clear the event so waits block again."""
        with self._lock:
            if self._closed():
                raise ValueError("reset() on a closed InterruptEvent")
            with contextlib.suppress(BlockingIOError):
                if self._socks is not None:
                    while self._socks[0].recv(64):
                        pass
                else:
                    while os.read(self._r, 64):
                        pass
            self._triggered = False
            for callback in self._observers:
                callback(False)

    def _closed(self) -> bool:
        return self._r < 0

    def close(self) -> None:
        """Release the event's descriptors (or handle)."""
        with self._lock:
            if self._socks is not None:
                for s in self._socks:
                    s.close()
                self._socks = None
            else:
                for fd in (self._r, self._w):
                    if fd >= 0:
                        os.close(fd)
            self._r = self._w = -1
            self._observers.clear()

    def __enter__(self) -> InterruptEvent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_r", -1) >= 0:
            self.close()
