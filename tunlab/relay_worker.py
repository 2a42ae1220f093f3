"""One direction of a Relay in its own process: blocking read -> write, no GIL to share.

Run as a script (stdlib only, `python -I -S relay_worker.py ...`) so it starts in milliseconds.

usage: python -m tunlab.relay_worker FD_IN FD_OUT READ_SIZE PARENT_PID [STATS_FD SLOT VNET]
The parent passes the fds; the worker dies with its parent (PR_SET_PDEATHSIG) or on SIGTERM.
With STATS_FD (a shared memfd) it counts frames, bytes and super-packets in its slot.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
STATS_SIZE = 64  # two slots of four 64-bit counters: frames, bytes, super-frames, spare


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def pump(fd_in: int, fd_out: int, size: int, counters: memoryview | None = None, vnet: bool = False) -> None:
    read, write = os.read, os.write
    while True:
        frame = read(fd_in, size)
        if not frame:
            return
        if counters is not None:
            counters[0] += 1
            counters[1] += len(frame)
            if vnet and frame[1]:  # virtio-net header gso_type: a super-packet
                counters[2] += 1
        try:
            write(fd_out, frame)
        except BlockingIOError:
            pass  # a full queue drops, as a NIC would
        except OSError as exc:
            if exc.errno in (9, 77):  # EBADF, EBADFD: the device is gone
                return
            # EIO (peer interface down) and EINVAL (refused frame): dropped


def main() -> None:
    fd_in, fd_out, size, parent = (int(x) for x in sys.argv[1:5])
    _die_with_parent(parent)
    counters = None
    vnet = False
    if len(sys.argv) > 7:
        stats_fd, slot, vnet = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
        shared = mmap.mmap(stats_fd, STATS_SIZE)
        counters = memoryview(shared).cast("Q")[slot * 4 : slot * 4 + 4]
        counters[3] = 1  # ready: the parent waits for this before the link counts as up
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    os.set_blocking(fd_in, True)
    os.set_blocking(fd_out, True)
    try:
        pump(fd_in, fd_out, size, counters, vnet)
    except OSError:
        pass


if __name__ == "__main__":
    main()
