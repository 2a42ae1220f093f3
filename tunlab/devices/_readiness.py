"""Readiness: what a device's readers and writers wait on, whatever the platform offers.

A backend hands out one Readiness. Where the device has a pollable fd (Linux, macOS, BSD) it
names that fd and the poll event; sync waits poll it together with an InterruptEvent, asyncio
and uvloop register it with the loop, trio waits on it. A backend without an fd (Wintun: a
ring and an event handle) subclasses Readiness and overrides wait(); async callers then wait
in a worker thread. Either way the callers above the backend never see which one it is.
"""

from __future__ import annotations

import contextlib
import enum
import select
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunlab.errors import DeviceClosedError

if TYPE_CHECKING:
    from tunlab.devices._interrupt import InterruptEvent

# poll() flags (Linux values where select has no poll(), so the module imports everywhere)
POLLIN = getattr(select, "POLLIN", 0x1)
POLLPRI = getattr(select, "POLLPRI", 0x2)
POLLOUT = getattr(select, "POLLOUT", 0x4)
POLLERR = getattr(select, "POLLERR", 0x8)
POLLHUP = getattr(select, "POLLHUP", 0x10)
POLLNVAL = getattr(select, "POLLNVAL", 0x20)
_BAD = POLLERR | POLLHUP | POLLNVAL


class Ready(enum.Enum):
    """How a wait ended (interrupts and closed devices raise instead)."""

    READY = "ready"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class PollTarget:
    """An fd to poll and which event means ready: POLLOUT (writable) or POLLIN (readable)."""

    fd: int
    writable: bool = False

    @property
    def events(self) -> int:
        return POLLOUT if self.writable else POLLIN | POLLPRI


class Readiness:
    """Wait until a device can be read (or written): poll its targets, or override wait()."""

    def __init__(self, read: PollTarget | None, write: PollTarget | None = None) -> None:
        self._read = read
        self._write = write

    def target(self, write: bool = False) -> PollTarget | None:
        """The fd (and event) to poll for this direction, or None when there is no fd."""
        return self._write if write else self._read

    def wait_handles(self) -> tuple[int, ...] | None:
        """OS handles whose signal means 'read again' where there is no fd (Windows), for event
        loops that wait on handles themselves (trio's WaitForSingleObject); None otherwise."""
        return None

    def ready_now(self) -> bool:
        """Whether a read would find a frame right now (only asked where wait_handles() is set)."""
        return False

    def begin_close(self) -> None:
        """Wake every waiter before the device closes (where waits are on handles: Windows)."""

    def waiters(self) -> int:
        """How many waits are in progress (counted where close must wait for them: Windows)."""
        return 0

    def holding(self) -> contextlib.AbstractContextManager[None]:
        """Held by a waiter outside wait() (trio on Windows), so close() waits for it to leave."""
        return contextlib.nullcontext()

    def wait(
        self,
        *,
        write: bool = False,
        timeout: float | None = None,
        interrupt: InterruptEvent | None = None,
    ) -> Ready:
        """Block until ready or timeout; InterruptedError when interrupt fires first.

        Device readiness is checked before the interrupt, so a frame already queued wins.
        """
        target = self.target(write)
        if target is None:
            raise NotImplementedError("this readiness has no fd: the backend overrides wait()")
        return poll_target(target, timeout, interrupt)


def poll_target(target: PollTarget, timeout: float | None, interrupt: InterruptEvent | None) -> Ready:
    """poll() (select() where there is no poll, as on Windows) on a target and an interrupt."""
    if target.fd < 0:
        raise DeviceClosedError()
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    ifd = interrupt.fileno() if interrupt is not None else -1
    if interrupt is not None and ifd < 0:
        raise ValueError("the InterruptEvent is closed")
    poll = getattr(select, "poll", None)
    poller = None
    if poll is not None:
        poller = poll()
        poller.register(target.fd, target.events)
        if ifd >= 0:
            poller.register(ifd, POLLIN)
    while True:
        remaining: float | None = None
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
        if poller is not None:
            ms = None if remaining is None else int(remaining * 1000 + 0.999)
            ready = dict(poller.poll(ms))
            dev = ready.get(target.fd, 0)
            if dev & target.events:
                return Ready.READY
            if dev & POLLNVAL:
                raise DeviceClosedError("the device was closed while waiting")
            if dev & _BAD:
                raise OSError("the device reported an error or hang-up while waiting")
            interrupted = bool(ready.get(ifd, 0)) if ifd >= 0 else False
        else:
            rlist = [ifd] if ifd >= 0 else []
            wlist = []
            if target.writable:
                wlist.append(target.fd)
            else:
                rlist.append(target.fd)
            try:
                r, w, _ = select.select(rlist, wlist, [], remaining)
            except (OSError, ValueError):
                raise DeviceClosedError("the device was closed while waiting") from None
            if target.fd in r or target.fd in w:
                return Ready.READY
            interrupted = ifd in r
        if interrupted:
            raise InterruptedError("wait interrupted by InterruptEvent")
        if deadline is not None and time.monotonic() >= deadline:
            return Ready.TIMEOUT
