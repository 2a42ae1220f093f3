"""Request/response latency over one TCP connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunlab.errors import LabError
from tunlab.testing._traffic.places import Place, family_of, server_socket

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class LatencyResult:
    samples_us: list[float]

    def percentile(self, p: float) -> float:
        """The p-th percentile (0..100) of the round-trip times, in ms."""
        data = sorted(self.samples_us)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    @property
    def p50(self) -> float:
        """The median round-trip time, in ms."""
        return self.percentile(50)

    @property
    def p99(self) -> float:
        """The 99th percentile round-trip time, in ms."""
        return self.percentile(99)


def request_response(
    client: Place, server: Place, address: str, *, count: int = 1000, size: int = 64, port: int = 0
) -> LatencyResult:
    """TCP ping-pong of `size`-byte messages; latency percentiles in microseconds."""
    family = family_of(address)
    srv = server_socket(server, address, port, socket.SOCK_STREAM, 30)
    port = srv.getsockname()[1]

    def echo() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return  # closed: the client gave up
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    samples = []
    msg = b"x" * size
    try:
        with client.socket(family, socket.SOCK_STREAM) as cli:
            cli.settimeout(30)
            cli.connect((address, port))
            cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                t0 = time.perf_counter()
                cli.sendall(msg)
                got = 0
                while got < size:
                    piece = cli.recv(size - got)
                    if not piece:
                        raise LabError(f"request/response to {address}: the server closed the connection")
                    got += len(piece)
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)  # wakes an echo thread still waiting in accept()
        srv.close()
        t.join(5)
    return LatencyResult(samples)


# ---- iperf3 -------------------------------------------------------------------------------------
