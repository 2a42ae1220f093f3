"""Readiness from Win32 event handles: a device without an fd (Wintun's ring, tap-windows6's
overlapped reads) waits with WaitForMultipleObjects on its own event, an InterruptEvent's
mirror event and the device's close event."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from tunlab.devices._interrupt import InterruptEvent
from tunlab.devices._readiness import Readiness, Ready
from tunlab.devices._windows import abi as W
from tunlab.devices._windows.win32 import Win32
from tunlab.errors import DeviceClosedError, DeviceError

_mirrors: weakref.WeakKeyDictionary[InterruptEvent, int] = weakref.WeakKeyDictionary()
_mirror_lock = threading.Lock()


def interrupt_handle(win: Win32, event: InterruptEvent) -> int:
    """A manual-reset Win32 event that is signalled exactly while event is triggered."""
    with _mirror_lock:
        handle = _mirrors.get(event)
        if handle is None:
            handle = win.create_event()
            _mirrors[event] = handle
            event.observe(lambda on: (win.set_event if on else win.reset_event)(handle))
            weakref.finalize(event, win.close_handle, handle)
        return handle


class HandleReadiness(Readiness):
    """Ready to read when `poll()` finds a frame, else when `handle` is signalled; writes never wait
    (the backend reports a full ring or queue itself)."""

    def __init__(self, win: Win32, handle: Callable[[], int], poll: Callable[[], bool], closing: int) -> None:
        super().__init__(None, None)
        self.win = win
        self._handle = handle  # the current read event (tap-windows6 re-arms one per read)
        self._poll = poll  # take a frame if one is there (kept by the backend); True if so
        self.closing = closing
        self._waiters = 0
        self._idle = threading.Condition()

    def wait_handles(self) -> tuple[int, ...]:
        """The read event and the close event (trio waits on each with WaitForSingleObject);
        only the close event while the device is down or closed."""
        try:
            return (self._handle(), self.closing)
        except DeviceError:
            return (self.closing,)

    def ready_now(self) -> bool:
        return self._poll()

    def begin_close(self) -> None:
        self.win.set_event(self.closing)

    def waiters(self) -> int:
        with self._idle:
            return self._waiters

    def drain(self, timeout: float = 2.0) -> None:
        """After `closing` is signalled: wait until every waiter has left, so the handles they
        wait on can be closed under no one (Windows leaves that undefined)."""
        with self._idle:
            self._idle.wait_for(lambda: self._waiters == 0, timeout)

    def wait(
        self,
        *,
        write: bool = False,
        timeout: float | None = None,
        interrupt: InterruptEvent | None = None,
    ) -> Ready:
        if write:
            return Ready.READY
        with self.holding():
            return self._wait_read(timeout, interrupt)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        with self._idle:
            self._waiters += 1
        try:
            yield
        finally:
            with self._idle:
                self._waiters -= 1
                self._idle.notify_all()

    def _wait_read(self, timeout: float | None, interrupt: InterruptEvent | None) -> Ready:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._poll():  # a frame already there wins over an interrupt
                return Ready.READY
            handles = [self._handle(), self.closing]
            if interrupt is not None:
                if interrupt.fileno() < 0:
                    raise ValueError("the InterruptEvent is closed")
                handles.append(interrupt_handle(self.win, interrupt))
            left = None if deadline is None else deadline - time.monotonic()
            ms = W.INFINITE if left is None else max(0, int(left * 1000 + 0.999))
            which = self.win.wait_any(handles, ms)
            if which is None:
                if self._poll():
                    return Ready.READY
                return Ready.TIMEOUT
            if which == 1:
                raise DeviceClosedError("the device was closed while waiting")
            if which == 2:
                if self._poll():
                    return Ready.READY
                raise InterruptedError("interrupted by its InterruptEvent")
