"""One direction of a Relay in its own process: blocking read -> write, no GIL to share.

usage: python -m tunlab.relay_worker FD_IN FD_OUT READ_SIZE
The parent passes both fds; the worker dies with its parent (PR_SET_PDEATHSIG) or on SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def pump(fd_in: int, fd_out: int, size: int) -> None:
    read, write = os.read, os.write
    while True:
        frame = read(fd_in, size)
        if not frame:
            return
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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    os.set_blocking(fd_in, True)
    os.set_blocking(fd_out, True)
    try:
        pump(fd_in, fd_out, size)
    except OSError:
        pass


if __name__ == "__main__":
    main()
