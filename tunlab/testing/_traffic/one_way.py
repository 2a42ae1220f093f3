"""One-way delay and loss: numbered UDP datagrams from a sender process, timestamped by the
receiving kernel."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunlab.errors import LabError
from tunlab.testing._traffic.places import Place, family_of, server_socket

if TYPE_CHECKING:
    pass


SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time (CLOCK_REALTIME) with every datagram
SENDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_udp_sender.py")


@dataclass(frozen=True)
class OneWayResult:
    """What paced, timestamped UDP probes saw: delays, losses, duplicates and order."""

    sent: int
    arrivals: list[int]  # sequence numbers in arrival order (duplicates included)
    delays_ms: list[float]  # one-way delay of each arrival (kernel receive time - send time)
    send_errors: int = 0
    received_ns: list[int] = field(default_factory=list)  # kernel receive time of each arrival (wall clock)

    @property
    def received(self) -> int:
        """Distinct probes that arrived."""
        return len(set(self.arrivals))

    @property
    def lost(self) -> int:
        """Probes sent and never received."""
        return self.sent - self.received

    @property
    def loss(self) -> float:
        """Fraction lost, 0.0 .. 1.0."""
        return self.lost / self.sent if self.sent else 0.0

    @property
    def duplicates(self) -> int:
        """Probes received more than once (each extra copy counts)."""
        return len(self.arrivals) - self.received

    @property
    def reordered(self) -> int:
        """Arrivals that came after a later-sent probe (netem's "reordered" as a receiver sees it)."""
        top, n = -1, 0
        for seq in self.arrivals:
            if seq < top:
                n += 1
            top = max(top, seq)
        return n

    def percentile(self, p: float) -> float:
        """The p-th percentile (0..100) of one-way delays, in ms."""
        data = sorted(self.delays_ms)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    @property
    def mean_ms(self) -> float:
        """The mean one-way delay, in ms."""
        return statistics.fmean(self.delays_ms) if self.delays_ms else float("nan")

    @property
    def stdev_ms(self) -> float:
        """The standard deviation of one-way delays, in ms."""
        return statistics.pstdev(self.delays_ms) if len(self.delays_ms) > 1 else 0.0

    def loss_runs(self) -> list[int]:
        """Lengths of the runs of consecutive lost probes (burst lengths)."""
        got = set(self.arrivals)
        runs, n = [], 0
        for seq in range(self.sent):
            if seq in got:
                if n:
                    runs.append(n)
                n = 0
            else:
                n += 1
        if n:
            runs.append(n)
        return runs


def one_way(
    client: Place,
    server: Place,
    address: str,
    *,
    count: int = 1000,
    rate_pps: float = 1000.0,
    size: int = 64,
    port: int = 0,
    settle: float = 1.0,
) -> OneWayResult:
    """Send `count` paced UDP probes from client to address (a server address) and time each.

    The sender runs in its own process, so pacing does not compete with the receiver (or a
    relay in this process) for the GIL; delays use the kernel's receive timestamp. `settle`
    is how long to wait after the last probe for stragglers (more than the largest delay).
    """
    if size < 16:
        raise ValueError("size: a probe carries 16 bytes of sequence number and time; use >= 16")
    if count < 1 or rate_pps <= 0:
        raise ValueError(f"count >= 1 and rate_pps > 0 needed, got count={count}, rate_pps={rate_pps}")
    family = family_of(address)
    srv = server_socket(server, address, port, socket.SOCK_DGRAM, 0.05)
    try:
        srv.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            srv.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): no overflow
        port = srv.getsockname()[1]
        cli = client.socket(family, socket.SOCK_DGRAM)
        try:
            cli.connect((address, port))
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SENDER, str(cli.fileno()), str(count), str(rate_pps), str(size)],
                pass_fds=(cli.fileno(),),
                stdout=subprocess.PIPE,
            )
        finally:
            cli.close()
        arrivals: list[int] = []
        delays: list[float] = []
        received: list[int] = []
        quiet_until: float | None = None
        while True:
            try:
                data, anc, _flags, _addr = srv.recvmsg(max(size, 64), 256)
            except TimeoutError:
                if proc.poll() is not None:
                    quiet_until = quiet_until or time.monotonic() + settle
                    if time.monotonic() >= quiet_until:
                        break
                continue
            if len(data) < 16:
                continue
            seq, sent_ns = struct.unpack_from("!QQ", data)
            rx_ns = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack_from("@qq", value)
                    rx_ns = sec * 10**9 + nsec
            arrivals.append(seq)
            delays.append((rx_ns - sent_ns) / 1e6)
            received.append(rx_ns)
            if proc.poll() is not None:
                quiet_until = time.monotonic() + settle
        out = proc.communicate(timeout=10)[0].decode().split()
    finally:
        srv.close()
    if proc.returncode != 0 or len(out) != 2:
        raise LabError(f"one-way probe sender failed (exit {proc.returncode})")
    return OneWayResult(int(out[0]), arrivals, delays, send_errors=int(out[1]), received_ns=received)


# ---- request/response ---------------------------------------------------------------------------
