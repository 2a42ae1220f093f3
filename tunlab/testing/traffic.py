"""Traffic between lab nodes (or any two places that can open sockets): ping, TCP and UDP
streams with byte-exact verification, request/response latency, and an iperf3 adapter.

A "place" is anything with `.socket(family, type)` and `.run(argv)`: a lab node, a tun_device
peer, or a NetNamespace wrapped in `place(ns)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tunlab.errors import LabError

if TYPE_CHECKING:
    from tunlab.linux.netns import NetNamespace
    from tunlab.topologies.drivers.base import NodeHandle

__all__ = [
    "LatencyResult",
    "OneWayResult",
    "PingResult",
    "Place",
    "StreamResult",
    "iperf3",
    "one_way",
    "ping",
    "place",
    "request_response",
    "tcp_stream",
    "udp_stream",
]


class Place(Protocol):
    def socket(self, family: int = ..., type: int = ..., proto: int = ...) -> socket.socket: ...


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _server_socket(server: Place, address: str, port: int, kind: int, timeout: float) -> socket.socket:
    """A socket of the server place bound to (address, port), listening if TCP; closed on failure."""
    srv = server.socket(_family(address), kind)
    try:
        if kind == socket.SOCK_STREAM:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((address, port))
        if kind == socket.SOCK_STREAM:
            srv.listen(1)
        srv.settimeout(timeout)
    except BaseException:
        srv.close()
        raise
    return srv


# ---- ping ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PingResult:
    address: str
    sent: int
    received: int
    rtt_ms: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Fraction lost, 0.0 .. 1.0."""
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def reachable(self) -> bool:
        return self.received > 0

    @property
    def rtt_avg_ms(self) -> float | None:
        return statistics.fmean(self.rtt_ms) if self.rtt_ms else None


def ping_argv(
    address: str, count: int, interval: float, timeout: float, platform: str = sys.platform
) -> list[str]:
    """ping's argv on this OS: each spells 'wait at most' differently (Linux -W per reply in
    seconds; macOS and FreeBSD -t for the whole run; OpenBSD and NetBSD -w), and the BSDs other
    than FreeBSD ping IPv6 with ping6."""
    whole = str(max(1, math.ceil(count * interval + timeout)))
    if platform.startswith("linux"):
        return ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(timeout), address]
    v6 = ":" in address
    if platform == "win32":  # -n is the count there; -w the wait per reply in ms; no interval
        return [
            "ping",
            *(["-6"] if v6 else ["-4"]),
            "-n",
            str(count),
            "-w",
            str(int(timeout * 1000)),
            address,
        ]
    program = "ping6" if v6 and not platform.startswith("freebsd") else "ping"
    base = [
        program,
        *(["-6"] if v6 and program == "ping" else []),
        "-n",
        "-c",
        str(count),
        "-i",
        str(interval),
    ]
    if platform.startswith(("darwin", "freebsd")):
        return [*base, *([] if v6 and platform.startswith("darwin") else ["-t", whole]), address]
    return [*base, "-w", whole, address]


def ping(
    source: Any, address: str, *, count: int = 3, interval: float = 0.2, timeout: float = 2.0
) -> PingResult:
    """ping from a place (with .run) to an address; parses what ping printed."""
    if shutil.which("ping") is None:
        raise LabError("ping is not installed (apt-get install iputils-ping)")
    argv = ping_argv(str(address), count, interval, timeout)
    done = source.run(argv, timeout=count * (interval + timeout) + 10)
    text = done.stdout.decode(errors="replace") if isinstance(done.stdout, bytes) else str(done.stdout)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    if m is None:  # Windows: "Packets: Sent = 2, Received = 2, Lost = 0"
        m = re.search(r"Sent = (\d+), Received = (\d+)", text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (count, 0)
    rtts = [float(x) for x in re.findall(r"time[=<]([\d.]+) ?ms", text)]
    return PingResult(str(address), sent, received, rtts)


# ---- TCP stream ---------------------------------------------------------------------------------
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
        return self.received_bytes * 8 / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        if self.protocol == "udp":
            return 1 - self.datagrams_received / self.datagrams_sent if self.datagrams_sent else 0.0
        return 1 - self.received_bytes / self.sent_bytes if self.sent_bytes else 0.0


def _pattern(n: int, seed: int) -> bytes:
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
    family = _family(address)
    srv = _server_socket(server, address, port, socket.SOCK_STREAM, timeout)
    port = srv.getsockname()[1]
    # the stream is `block` repeated (or exactly `data`): the receiver compares what arrives with
    # where it must be in the block, so corruption, loss and reordering all show, without hashing.
    # Slices are compared as bytes (memcmp); memoryview equality goes item by item and is 30x slower.
    expected = bytes(data) if data is not None else _pattern(1 << 20, 7)
    block = memoryview(expected)
    got = [0]
    damaged = [False]
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(timeout)
                buf = bytearray(1 << 20)
                pos = 0
                while n := conn.recv_into(buf):
                    got[0] += n
                    off = 0
                    while off < n and not damaged[0]:
                        take = min(n - off, len(expected) - pos)
                        if buf[off : off + take] != expected[pos : pos + take]:
                            damaged[0] = True
                        off += take
                        pos = (pos + take) % len(expected)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=receive, daemon=True)
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
    if errors:
        raise LabError(f"TCP stream to {address}: the receiver failed: {errors[0]}")
    exact = got[0] == sent and not damaged[0]
    return StreamResult("tcp", sent, got[0], elapsed, exact)


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
    family = _family(address)
    srv = _server_socket(server, address, port, socket.SOCK_DGRAM, settle)
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
    body_tail = _pattern(size, 11)[4 : size - 16]
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
    payload = bytes(data) if data is not None else (_pattern(1 << 20, 7) * (nbytes // (1 << 20) + 1))[:nbytes]
    f = "/tmp/tl-stream"
    script = f"nc -l -p {port} > {f}; wc -c < {f}; sha256sum {f}; rm -f {f}"
    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.setdefault("r", server.run(["sh", "-c", script], timeout=timeout))
    )
    t.start()
    family = _family(address)
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
SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time (CLOCK_REALTIME) with every datagram
SENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp_sender.py")


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
        return self.sent - self.received

    @property
    def loss(self) -> float:
        """Fraction lost, 0.0 .. 1.0."""
        return self.lost / self.sent if self.sent else 0.0

    @property
    def duplicates(self) -> int:
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
        data = sorted(self.delays_ms)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.delays_ms) if self.delays_ms else float("nan")

    @property
    def stdev_ms(self) -> float:
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
    family = _family(address)
    srv = _server_socket(server, address, port, socket.SOCK_DGRAM, 0.05)
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
@dataclass(frozen=True)
class LatencyResult:
    samples_us: list[float]

    def percentile(self, p: float) -> float:
        data = sorted(self.samples_us)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


def request_response(
    client: Place, server: Place, address: str, *, count: int = 1000, size: int = 64, port: int = 0
) -> LatencyResult:
    """TCP ping-pong of `size`-byte messages; latency percentiles in microseconds."""
    family = _family(address)
    srv = _server_socket(server, address, port, socket.SOCK_STREAM, 30)
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
def iperf3(
    client: Any,
    server: Any,
    address: str,
    *,
    seconds: int = 5,
    udp: bool = False,
    bitrate: str | None = None,
    parallel: int = 1,
) -> dict[str, Any]:
    """Run iperf3 between two places (needs iperf3 installed); returns its JSON report.

    parallel > 1 runs that many streams at once (iperf3 -P)."""
    if shutil.which("iperf3") is None:
        raise LabError("iperf3 is not installed (apt-get install iperf3)")
    argv_srv = ["iperf3", "-s", "-1", "-B", address]
    guest_server: threading.Thread | None = None
    if getattr(server, "in_guest", False):  # no popen in a guest: the agent runs it meanwhile
        guest_server = threading.Thread(target=server.run, args=(argv_srv,), kwargs={"timeout": seconds + 60})
        guest_server.start()
        srv = None
    else:
        srv = server.popen(argv_srv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        argv = ["iperf3", "-c", address, "-t", str(seconds), "-J"]
        if udp:
            argv.append("-u")
        if bitrate:
            argv += ["-b", bitrate]
        if parallel > 1:
            argv += ["-P", str(parallel)]
        for _ in range(50):
            done = client.run(argv, timeout=seconds + 30)
            report = json.loads(done.stdout or b"{}")
            if "connection refused" not in str(report.get("error", "")).lower():
                break
            time.sleep(0.1)
        if "error" in report:
            raise LabError(f"iperf3: {report['error']}")
        return dict(report)
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        if guest_server is not None:
            guest_server.join(seconds + 70)


def place(ns: NetNamespace) -> NodeHandle:
    """A traffic place for a bare namespace: sockets, run and popen inside it."""
    from tunlab.topologies.drivers.base import NodeHandle

    return NodeHandle(ns.name or ns.path, "netns", ns)
