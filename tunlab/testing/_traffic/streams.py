"""TCP and UDP streams between two places, verified at the receiver byte for byte."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunlab.errors import LabError
from tunlab.testing._traffic.places import Place, family_of, server_socket

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class StreamResult:
    """What a stream moved: bytes, time, throughput, and whether it arrived exactly."""

    protocol: str
    sent_bytes: int
    received_bytes: int
    seconds: float
    exact: bool  # TCP: same bytes in the same order; UDP: every datagram intact
    datagrams_sent: int = 0
    datagrams_received: int = 0
    reordered: int = 0

    @property
    def gbps(self) -> float:
        """Throughput in Gbit/s (payload bytes received over the elapsed time)."""
        return self.received_bytes * 8 / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        """Fraction of the bytes sent that did not arrive (0..1)."""
        if self.protocol == "udp":
            return 1 - self.datagrams_received / self.datagrams_sent if self.datagrams_sent else 0.0
        return 1 - self.received_bytes / self.sent_bytes if self.sent_bytes else 0.0


def pattern(n: int, seed: int) -> bytes:
    """Deterministic, incompressible-looking bytes (so corruption and reordering show)."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(block + i.to_bytes(8, "big")).digest() * 64
        i += 1
    return bytes(out[:n])


def tcp_stream(
    client: Place,
    server: Place,
    address: str,
    *,
    nbytes: int | None = None,
    duration: float | None = None,
    data: bytes | None = None,
    port: int = 0,
    chunk: int = 1 << 16,
    timeout: float = 60.0,
) -> StreamResult:
    """Send a TCP stream client -> server (listening on address) and verify every byte.

    Give nbytes (exact size), duration (seconds of sending; default 2 s) or data (exactly these
    bytes).
    """
    if data is not None:
        nbytes, duration = len(data), None
    if nbytes is None and duration is None:
        duration = 2.0
    if getattr(server, "in_guest", False):
        return _tcp_stream_to_guest(client, server, address, nbytes or 8 << 20, data, port, timeout)
    family = family_of(address)
    srv = server_socket(server, address, port, socket.SOCK_STREAM, timeout)
    port = srv.getsockname()[1]
    # the stream is `block` repeated (or exactly `data`): the receiver compares what arrives with
    # where it must be in the block, so corruption, loss and reordering all show, without hashing.
    # Slices are compared as bytes (memcmp); memoryview equality goes item by item and is 30x slower.
    expected = bytes(data) if data is not None else pattern(1 << 20, 7)
    block = memoryview(expected)
    check = _Receiver(expected)
    t = threading.Thread(target=check.run, args=(srv, timeout), daemon=True)
    t.start()
    sent = 0
    cli = client.socket(family, socket.SOCK_STREAM)
    cli.settimeout(timeout)
    start = time.perf_counter()
    try:
        cli.connect((address, port))
        deadline = start + duration if duration is not None else None
        pos = 0
        while True:
            want = chunk if nbytes is None else min(chunk, nbytes - sent)
            if want <= 0 or (deadline is not None and time.perf_counter() >= deadline):
                break
            piece = block[pos : pos + want]
            cli.sendall(piece)
            sent += len(piece)
            pos = (pos + len(piece)) % len(block)
        cli.shutdown(socket.SHUT_WR)
        t.join(timeout)
        elapsed = time.perf_counter() - start
    finally:
        cli.close()
        srv.close()
    if check.errors:
        raise LabError(f"TCP stream to {address}: the receiver failed: {check.errors[0]}")
    exact = check.got == sent and not check.damaged
    return StreamResult("tcp", sent, check.got, elapsed, exact)


class _Receiver:
    """The server side of tcp_stream: accepts one connection and compares every byte with where
    it must be in the repeated block (slices as bytes: memcmp)."""

    def __init__(self, expected: bytes) -> None:
        self.expected = expected
        self.got = 0
        self.damaged = False
        self.errors: list[BaseException] = []

    def run(self, srv: socket.socket, timeout: float) -> None:
        expected = self.expected
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                buf = bytearray(1 << 20)
                pos = 0
                while n := conn.recv_into(buf):
                    self.got += n
                    off = 0
                    while off < n and not self.damaged:
                        take = min(n - off, len(expected) - pos)
                        if buf[off : off + take] != expected[pos : pos + take]:
                            self.damaged = True
                        off += take
                        pos = (pos + take) % len(expected)
        except BaseException as exc:
            self.errors.append(exc)


# ---- UDP stream ---------------------------------------------------------------------------------
def udp_stream(
    client: Place,
    server: Place,
    address: str,
    *,
    count: int = 1000,
    size: int = 1200,
    rate_pps: float | None = None,
    port: int = 0,
    settle: float = 0.5,
) -> StreamResult:
    """Send numbered UDP datagrams and count what arrived intact, lost and out of order."""
    if size < 16:
        raise ValueError("size: UDP datagrams carry a 16-byte sequence header; use >= 16")
    family = family_of(address)
    srv = server_socket(server, address, port, socket.SOCK_DGRAM, settle)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    port = srv.getsockname()[1]
    seen: dict[int, bool] = {}
    reordered = [0]
    last = [-1]
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                data = srv.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 16:
                continue
            seq = int.from_bytes(data[:8], "big")
            ok = data[8:16] == hashlib.blake2b(data[16:], digest_size=8).digest()
            seen[seq] = ok
            if seq < last[0]:
                reordered[0] += 1
            last[0] = max(last[0], seq)

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    cli = client.socket(family, socket.SOCK_DGRAM)
    body_tail = pattern(size, 11)[4 : size - 16]
    start = time.perf_counter()
    try:
        for seq in range(count):
            body = seq.to_bytes(4, "big") + body_tail
            cli.sendto(
                seq.to_bytes(8, "big") + hashlib.blake2b(body, digest_size=8).digest() + body,
                (address, port),
            )
            if rate_pps:
                target = start + (seq + 1) / rate_pps
                while (ahead := target - time.perf_counter()) > 0:
                    time.sleep(min(0.001, ahead))
        sent_time = time.perf_counter() - start
        time.sleep(settle)
    finally:
        done.set()
        cli.close()
        t.join(2 * settle + 1)
        srv.close()
    received = sum(1 for ok in seen.values() if ok)
    return StreamResult(
        "udp",
        count * size,
        received * size,
        sent_time,
        exact=all(seen.values()),
        datagrams_sent=count,
        datagrams_received=received,
        reordered=reordered[0],
    )


def _tcp_stream_to_guest(
    client: Place, server: Any, address: str, nbytes: int, data: bytes | None, port: int, timeout: float
) -> StreamResult:
    """tcp_stream into a VM node: the guest's nc receives to a file, its size and sha256 are
    compared with what was sent (the guest's sockets are not this process's)."""
    port = port or 5599
    payload = bytes(data) if data is not None else (pattern(1 << 20, 7) * (nbytes // (1 << 20) + 1))[:nbytes]
    f = "/tmp/tl-stream"
    script = f"nc -l -p {port} > {f}; wc -c < {f}; sha256sum {f}; rm -f {f}"
    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.setdefault("r", server.run(["sh", "-c", script], timeout=timeout))
    )
    t.start()
    family = family_of(address)
    start = time.perf_counter()
    deadline = start + min(timeout, 30)
    while True:  # until the guest's nc listens
        cli = client.socket(family, socket.SOCK_STREAM)
        cli.settimeout(timeout)
        try:
            cli.connect((address, port))
            break
        except (ConnectionRefusedError, TimeoutError, OSError):
            cli.close()
            if time.perf_counter() > deadline or not t.is_alive():
                t.join(1)
                raise LabError(
                    f"TCP stream to VM node at {address}:{port}: the guest's nc did not listen"
                ) from None
            time.sleep(0.05)
    try:
        cli.sendall(payload)
        cli.shutdown(socket.SHUT_WR)
        t.join(timeout)
        elapsed = time.perf_counter() - start
    finally:
        cli.close()
    done = box.get("r")
    if done is None or not done.ok:
        why = done.stderr.decode(errors="replace").strip() if done is not None else "no answer"
        raise LabError(f"TCP stream to VM node at {address}: the guest side failed: {why}")
    lines = done.stdout.decode().split()
    got, digest = int(lines[0]), lines[1]
    exact = got == len(payload) and digest == hashlib.sha256(payload).hexdigest()
    return StreamResult("tcp", len(payload), got, elapsed, exact)


# ---- one-way delay ------------------------------------------------------------------------------
