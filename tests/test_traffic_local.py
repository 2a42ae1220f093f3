"""The stream checkers themselves, on loopback (no root): they must notice damage."""

from __future__ import annotations

import os
import socket

import pytest

from tunlab import traffic


class Loopback:
    """A traffic place on 127.0.0.1; `corrupt_at` flips one byte of what the client sends."""

    def __init__(self, corrupt_at: int | None = None) -> None:
        self.corrupt_at = corrupt_at

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        sock = socket.socket(family, type, proto)
        if self.corrupt_at is None:
            return sock
        return _Corrupting(sock, self.corrupt_at)


class _Corrupting:
    def __init__(self, sock: socket.socket, at: int) -> None:
        self._sock, self._at, self._sent = sock, at, 0

    def sendall(self, data) -> None:
        data = bytearray(data)
        if self._sent <= self._at < self._sent + len(data):
            data[self._at - self._sent] ^= 0xFF
        self._sent += len(data)
        self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_an_intact_stream_is_exact() -> None:
    for kwargs in ({"nbytes": 3_000_001}, {"data": b"tunlab" * 5000}, {"duration": 0.2}):
        res = traffic.tcp_stream(Loopback(), Loopback(), "127.0.0.1", **kwargs)
        assert res.exact, kwargs
        assert res.sent_bytes == res.received_bytes > 0


def test_one_flipped_byte_is_noticed() -> None:
    res = traffic.tcp_stream(Loopback(corrupt_at=1_500_000), Loopback(), "127.0.0.1", nbytes=3_000_000)
    assert res.received_bytes == res.sent_bytes == 3_000_000
    assert not res.exact


def test_udp_stream_on_loopback() -> None:
    res = traffic.udp_stream(Loopback(), Loopback(), "127.0.0.1", count=200, size=200, rate_pps=20000)
    assert res.datagrams_sent == 200
    assert res.exact


def test_request_response_on_loopback() -> None:
    res = traffic.request_response(Loopback(), Loopback(), "127.0.0.1", count=50, size=100)
    assert len(res.samples_us) == 50
    assert 0 < res.p50 <= res.p99


def test_a_server_that_cannot_bind_leaves_no_socket_open() -> None:
    """198.18.0.1 is no local address: bind fails before anything is sent."""
    before = set(os.listdir("/proc/self/fd"))
    failures = []  # kept alive: their tracebacks would keep an unclosed socket referenced
    for run in (
        lambda: traffic.tcp_stream(Loopback(), Loopback(), "198.18.0.1", nbytes=10),
        lambda: traffic.udp_stream(Loopback(), Loopback(), "198.18.0.1", count=1),
        lambda: traffic.request_response(Loopback(), Loopback(), "198.18.0.1", count=1),
    ):
        with pytest.raises(OSError) as info:
            run()
        failures.append(info)
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("platform", "address", "argv"),
    [
        ("linux", "198.18.0.2", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2.0", "198.18.0.2"]),
        ("darwin", "198.18.0.2", ["ping", "-n", "-c", "2", "-i", "0.2", "-t", "3", "198.18.0.2"]),
        ("darwin", "2001:db8::2", ["ping6", "-n", "-c", "2", "-i", "0.2", "2001:db8::2"]),
        ("freebsd14", "2001:db8::2", ["ping", "-6", "-n", "-c", "2", "-i", "0.2", "-t", "3", "2001:db8::2"]),
        ("openbsd7", "198.18.0.2", ["ping", "-n", "-c", "2", "-i", "0.2", "-w", "3", "198.18.0.2"]),
        ("netbsd10", "2001:db8::2", ["ping6", "-n", "-c", "2", "-i", "0.2", "-w", "3", "2001:db8::2"]),
        ("win32", "198.18.0.2", ["ping", "-4", "-n", "2", "-w", "2000", "198.18.0.2"]),
    ],
)
def test_ping_is_spelled_for_each_os(platform: str, address: str, argv: list[str]) -> None:
    from tunlab.testing._traffic import ping_argv

    assert ping_argv(address, 2, 0.2, 2.0, platform) == argv


def test_the_bsd_ping_summary_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """BSD ping says '2 packets received' where Linux says '2 received'."""
    from tunlab.testing import _traffic as traffic

    class Host:
        def run(self, argv: list[str], timeout: float) -> object:
            text = (
                "64 bytes from 198.18.0.2: icmp_seq=0 ttl=64 time=0.512 ms\n"
                "64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=0.250 ms\n"
                "2 packets transmitted, 2 packets received, 0.0% packet loss\n"
            )
            return type("Done", (), {"stdout": text.encode(), "returncode": 0})()

    result = traffic.ping(Host(), "198.18.0.2", count=2)
    assert (result.sent, result.received, result.rtt_ms) == (2, 2, [0.512, 0.25])


def test_the_windows_ping_summary_is_parsed() -> None:
    from tunlab.testing import _traffic as traffic

    class Host:
        def run(self, argv: list[str], timeout: float) -> object:
            text = (
                "Reply from 198.18.0.2: bytes=32 time<1ms TTL=64\r\n"
                "Reply from 198.18.0.2: bytes=32 time=3ms TTL=64\r\n"
                "    Packets: Sent = 2, Received = 2, Lost = 0 (0% loss),\r\n"
            )
            return type("Done", (), {"stdout": text.encode(), "returncode": 0})()

    result = traffic.ping(Host(), "198.18.0.2", count=2)
    assert (result.sent, result.received, result.rtt_ms) == (2, 2, [1.0, 3.0])
