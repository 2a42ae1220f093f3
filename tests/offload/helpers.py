"""Builders for offload test cases (derived from the kernel's virtio/GSO contract, not copied)."""

from __future__ import annotations

import struct

import pytest

from tests.support import missing
from tunlab import packets as pk
from tunlab.devices.offload import _csum as csum

V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8::1", "2001:db8::2")
TS_OPTS = b"\x01\x01\x08\x0a" + struct.pack("!II", 1000, 2000)


@pytest.fixture(params=["python", "numpy"])
def accel(request):
    """Run a test with each checksum engine; both must give identical results."""
    if request.param == "numpy" and csum.numpy_module() is None:
        pytest.skip(missing("numpy"))
    before = csum.accelerator()
    csum.set_accelerator(request.param)
    yield request.param
    csum.set_accelerator(before)


def tcp_flow(
    count: int,
    mss: int = 1448,
    *,
    addrs: tuple[str, str] = V4,
    seq: int = 1000,
    last: int | None = None,
    opts: bytes = TS_OPTS,
    flags: int = 0x10,
    last_flags: int | None = None,
    ack: int = 7,
    ident: int = 100,
) -> list[bytes]:
    """count consecutive segments of one TCP flow (the last one may be shorter)."""
    out = []
    for i in range(count):
        size = last if (last is not None and i == count - 1) else mss
        payload = bytes((seq + i * mss + j) & 0xFF for j in range(size))
        f = last_flags if (last_flags is not None and i == count - 1) else flags
        kw = {"ident": ident + i} if ":" not in addrs[0] else {}
        out.append(
            pk.tcp_packet(
                addrs[0],
                addrs[1],
                40000,
                80,
                payload,
                seq=seq + i * mss,
                ack=ack,
                flags=f,
                options=opts,
                **kw,
            )
        )
    return out


def udp_flow(
    count: int, size: int = 1200, *, addrs: tuple[str, str] = V4, last: int | None = None
) -> list[bytes]:
    out = []
    for i in range(count):
        n = last if (last is not None and i == count - 1) else size
        kw = {"ident": 100 + i} if ":" not in addrs[0] else {}  # the kernel's USO increments IDs
        out.append(
            pk.udp_packet(addrs[0], addrs[1], 5000, 6000, bytes((i + j) & 0xFF for j in range(n)), **kw)
        )
    return out


def tcp_fields(packet: bytes) -> dict[str, int | bytes]:
    ip = pk.parse_ip(packet)
    seg = ip.payload
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", seg)
    thl = (off >> 4) * 4
    return {
        "seq": seq,
        "ack": ack,
        "flags": flags,
        "payload": seg[thl:],
        "sport": sport,
        "dport": dport,
    }
