"""InterruptEvent: wake a thread blocked on a device from another thread (a pipe + poll)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

from tunlab.errors import DeviceClosedError


class InterruptEvent:
    """A level-triggered event another thread waits on together with a device fd.

    trigger() makes every current and future wait fail with InterruptedError until reset().
    """

    def __init__(self) -> None:
        r, w = os.pipe()  # non-inheritable (O_CLOEXEC) as every fd Python creates
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._r, self._w = r, w
        self._lock = threading.Lock()
        self._triggered = False

    def fileno(self) -> int:
        """The fd that becomes readable once triggered (for select/poll/event loops)."""
        return self._r

    @property
    def is_triggered(self) -> bool:
        return self._triggered

    def trigger(self) -> None:
        with self._lock:
            if self._closed():
                raise ValueError("trigger() on a closed InterruptEvent")
            if not self._triggered:
                self._triggered = True
                os.write(self._w, b"\x01")

    def reset(self) -> None:
        with self._lock:
            if self._closed():
                raise ValueError("reset() on a closed InterruptEvent")
            with contextlib.suppress(BlockingIOError):
                while os.read(self._r, 64):
                    pass
            self._triggered = False

    def _closed(self) -> bool:
        return self._r < 0

    def close(self) -> None:
        with self._lock:
            for fd in (self._r, self._w):
                if fd >= 0:
                    os.close(fd)
            self._r = self._w = -1

    def __enter__(self) -> InterruptEvent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_r", -1) >= 0:
            self.close()


# poll() flags (Linux values where select has no poll(), so the module imports everywhere)
_POLLIN = getattr(select, "POLLIN", 0x1)
_POLLPRI = getattr(select, "POLLPRI", 0x2)
_POLLOUT = getattr(select, "POLLOUT", 0x4)
_POLLERR = getattr(select, "POLLERR", 0x8)
_POLLHUP = getattr(select, "POLLHUP", 0x10)
_POLLNVAL = getattr(select, "POLLNVAL", 0x20)
_READ_READY = _POLLIN | _POLLPRI
_WRITE_READY = _POLLOUT
_BAD = _POLLERR | _POLLHUP | _POLLNVAL


def wait_fd(fd: int, event: InterruptEvent, timeout: float | None, *, write: bool = False) -> None:
    """Block until fd is ready, the event fires (InterruptedError) or timeout passes (TimeoutError).

    Device readiness is checked before the interrupt, so a packet already queued wins.
    """
    if fd < 0:
        raise DeviceClosedError()
    want = _WRITE_READY if write else _READ_READY
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    poller = select.poll()
    poller.register(fd, want)
    poller.register(event.fileno(), _POLLIN)
    while True:
        remaining_ms: int | None = None
        if deadline is not None:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
        ready = dict(poller.poll(remaining_ms))
        dev = ready.get(fd, 0)
        if dev & want:
            return
        if dev & _POLLNVAL:
            raise DeviceClosedError("the device was closed while waiting")
        if dev & _BAD:
            raise OSError("the device reported an error or hang-up while waiting")
        if ready.get(event.fileno(), 0):
            raise InterruptedError("wait interrupted by InterruptEvent")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"device not {'writable' if write else 'readable'} within {timeout} s")
