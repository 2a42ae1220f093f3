"""The relay loops as they were before the backend owned frame I/O (the 0.1 release), kept
only as the baseline `make bench` measures the current relay against, in the same run.

usage: python -I -S benchmarks/baseline_relay.py FD_IN FD_OUT READ_SIZE VNET   (one direction)
"""

from __future__ import annotations

import array
import os
import select
import sys
import threading
from dataclasses import dataclass, field


def process_pump(fd_in: int, fd_out: int, size: int, vnet: bool) -> None:
    """The old process worker: blocking os.read -> os.write, three counters in shared words."""
    os.set_blocking(fd_in, True)
    os.set_blocking(fd_out, True)
    read, write = os.read, os.write
    counters = memoryview(array.array("Q", bytes(32)))  # the old worker's shared-memory slot
    while True:
        frame = read(fd_in, size)
        if not frame:
            return
        counters[0] += 1
        counters[1] += len(frame)
        if vnet and frame[1]:
            counters[2] += 1
        try:
            write(fd_out, frame)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (9, 77):
                return


@dataclass
class _Stats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    super_frames_in: int = 0
    errors: list[str] = field(default_factory=list)


class _OldThreadRelay:
    """The old Relay's thread pump (_pump_passthrough + _write), line for line in behaviour."""

    def __init__(self) -> None:
        self.stop_r, self.stop_w = os.pipe()
        self.stopping = False

    def wait(self, fd: int, write: bool = False) -> bool:
        if write:
            _, ready, _ = select.select([self.stop_r], [fd], [])
        else:
            ready, _, _ = select.select([fd, self.stop_r], [], [])
        return fd in ready and not self.stopping

    def pump(self, rfd: int, wfd: int, size: int, vnet: bool, stats: _Stats) -> None:
        read = os.read
        while not self.stopping:
            try:
                frame = read(rfd, size)
            except BlockingIOError:
                if not self.wait(rfd):
                    return
                continue
            stats.frames_in += 1
            stats.bytes_in += len(frame)
            if vnet and frame[1]:
                stats.super_frames_in += 1
            if not self.write(wfd, frame, stats):
                return

    def write(self, fd: int, frame: bytes, stats: _Stats) -> bool:
        while True:
            try:
                n = os.write(fd, frame)
            except BlockingIOError:
                if not self.wait(fd, write=True):
                    return False
                continue
            except OSError as exc:
                if exc.errno in (9, 77):
                    return False
                stats.errors.append(f"write: {exc.strerror}")
                return True
            stats.frames_out += 1
            stats.bytes_out += n
            return True


def thread_relay(fd_a: int, fd_b: int, size: int, vnet: bool) -> list[threading.Thread]:
    """The old thread relay: nonblocking fds, select() on the fd and a stop pipe."""
    relay = _OldThreadRelay()
    for fd in (fd_a, fd_b):
        os.set_blocking(fd, False)
    threads = [
        threading.Thread(target=relay.pump, args=(r, w, size, vnet, _Stats()), daemon=True)
        for r, w in ((fd_a, fd_b), (fd_b, fd_a))
    ]
    for t in threads:
        t.start()
    return threads


if __name__ == "__main__":
    process_pump(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
