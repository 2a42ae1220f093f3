"""Paced UDP probes from their own process (no GIL shared with the receiver or a relay).

usage: python -I -S udp_sender.py FD COUNT RATE_PPS SIZE
FD is a connected UDP socket the parent made in the sending place. Each datagram carries its
sequence number and the wall-clock send time (ns), which the receiver compares with the
kernel's receive timestamp. Prints how many it sent and how many sends failed.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def main() -> None:
    fd, count, rate, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    sock = socket.socket(fileno=fd)
    pad = bytes(max(0, size - 16))
    pack = struct.Struct("!QQ").pack
    clock = time.monotonic_ns
    wall = time.time_ns
    gap = 1e9 / rate if rate > 0 else 0.0
    try:  # timer slack 1 us (Linux): sleep close to the target instead of spinning a core
        import ctypes

        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    start = clock()
    errors = 0
    for seq in range(count):
        if gap:
            target = start + seq * gap
            ahead = target - clock()
            if ahead > 40_000:
                time.sleep((ahead - 20_000) / 1e9)
            while clock() < target:
                pass
        try:
            sock.send(pack(seq, wall()) + pad)
        except OSError:
            errors += 1  # refused locally (a full queue): sent and lost, as far as the probe knows
    print(count, errors, flush=True)


if __name__ == "__main__":
    main()
