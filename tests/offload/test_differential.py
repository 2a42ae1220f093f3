"""The compiled core against the pure Python reference: byte-identical output, the same error
types, on generated cases (valid super-packets of every GSO type and size, mutations,
truncations, interleaved and out-of-order flows, garbage) — more than 100,000 of them."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunlab import packets as pk
from tunlab.devices import offload
from tunlab.devices.offload import VirtioNetHdr, coalesce, ones_sum, split
from tunlab.devices.offload._gso import split_frame
from tunlab.devices.offload._virtio import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
)

pytestmark = pytest.mark.skipif(
    "compiled" not in offload.available(), reason="the compiled core is not built"
)

V4 = [("198.18.0.1", "198.18.0.2"), ("198.18.1.1", "198.18.1.2")]
V6 = [("2001:db8::1", "2001:db8::2"), ("fd00::1", "fd00::2")]
MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def both(fn: Callable[[], Any]) -> Any:
    """fn() under each implementation: the results (or the exception types) must be equal."""
    out = []
    for name in ("python", "compiled"):
        with offload.using(name):
            try:
                out.append(("ok", fn()))
            except Exception as exc:  # compared by type below
                out.append(("error", type(exc)))
    assert out[0] == out[1], f"python {out[0]!r:.300} != compiled {out[1]!r:.300}"
    return out[1]


def flow(rng: random.Random, *, udp: bool = False, v6: bool | None = None) -> list[bytes]:
    """Consecutive segments of one flow (random sizes, options, flags at the end)."""
    v6 = rng.random() < 0.4 if v6 is None else v6
    src, dst = rng.choice(V6 if v6 else V4)
    count = rng.randint(1, 12)
    mss = rng.choice([1, 7, 100, 536, 1000, 1448, rng.randint(1, 1500)])
    seq = rng.randint(0, 2**32 - 1)
    last = rng.randint(1, mss)
    ident = rng.randint(0, 0xFFFF)
    out = []
    for i in range(count):
        size = last if i == count - 1 else mss
        payload = rng.randbytes(size)
        kw: dict[str, int] = {} if v6 else {"ident": (ident + i) & 0xFFFF}
        if udp:
            out.append(pk.udp_packet(src, dst, 5000, 6000, payload, **kw))
        else:
            flags = 0x10 | (0x08 if i == count - 1 and rng.random() < 0.5 else 0)
            opts = rng.choice([b"", b"\x01\x01\x08\x0a" + rng.randbytes(8)])
            out.append(
                pk.tcp_packet(
                    src,
                    dst,
                    40000,
                    80,
                    payload,
                    seq=(seq + i * mss) & 0xFFFFFFFF,
                    ack=7,
                    flags=flags,
                    options=opts,
                    **kw,
                )
            )
    return out


def mutate(rng: random.Random, pkt: bytes) -> bytes:
    """A random flip, truncation or extension (most mutated packets must go out alone)."""
    choice = rng.random()
    b = bytearray(pkt)
    if choice < 0.4 and b:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif choice < 0.7 and b:
        del b[rng.randrange(len(b)) :]
    elif choice < 0.85:
        b += rng.randbytes(rng.randint(1, 8))
    else:
        b = bytearray(rng.randbytes(rng.randint(0, 80)))
    return bytes(b)


def batch(rng: random.Random) -> list[bytes]:
    """Interleaved flows, partly out of order, with some mutated packets."""
    flows = [flow(rng, udp=rng.random() < 0.25) for _ in range(rng.randint(1, 4))]
    packets: list[bytes] = []
    while any(flows):
        f = rng.choice([f for f in flows if f])
        packets.append(f.pop(0))
    if rng.random() < 0.3 and len(packets) > 1:  # out of order
        i = rng.randrange(len(packets) - 1)
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    return [mutate(rng, p) if rng.random() < 0.1 else p for p in packets]


def super_packet(rng: random.Random) -> tuple[VirtioNetHdr, bytes]:
    """A super-packet and its header: coalesced from a flow (valid), or crafted (any gso_size)."""
    udp = rng.random() < 0.3
    segs = flow(rng, udp=udp)
    with offload.using("python"):
        frames = coalesce(segs, udp_gro=udp)
    frame = rng.choice(frames)
    hdr, pkt = VirtioNetHdr.decode(frame), frame[10:]
    if rng.random() < 0.3:  # another gso_size / type, ECN bit, NEEDS_CSUM on a plain packet
        gso_type = rng.choice(
            [
                VIRTIO_NET_HDR_GSO_TCPV4,
                VIRTIO_NET_HDR_GSO_TCPV6,
                VIRTIO_NET_HDR_GSO_UDP_L4,
                VIRTIO_NET_HDR_GSO_NONE,
                3,
            ]
        ) | (VIRTIO_NET_HDR_GSO_ECN if rng.random() < 0.1 else 0)
        hdr = VirtioNetHdr(
            rng.choice([0, VIRTIO_NET_HDR_F_NEEDS_CSUM]),
            gso_type,
            hdr.hdr_len,
            rng.choice([0, 1, 8, 1000, 65535, rng.randint(1, 70000) & 0xFFFF]),
            hdr.csum_start if rng.random() < 0.8 else rng.randint(0, 0xFFFF),
            hdr.csum_offset,
        )
    if rng.random() < 0.15:
        pkt = mutate(rng, pkt)
    return hdr, pkt


def one_case(rng: random.Random) -> None:
    kind = rng.random()
    if kind < 0.35:
        hdr, pkt = super_packet(rng)
        both(lambda: split(hdr, pkt))
        if rng.random() < 0.2:
            frame = MAC + (b"\x86\xdd" if pkt[:1] and pkt[0] >> 4 == 6 else b"\x08\x00") + pkt
            both(lambda: split_frame(hdr, frame))
    elif kind < 0.75:
        packets = batch(rng)
        udp = rng.random() < 0.5
        both(lambda: coalesce(packets, udp_gro=udp))
        if rng.random() < 0.2:
            frames = [MAC + (b"\x86\xdd" if p[:1] and p[0] >> 4 == 6 else b"\x08\x00") + p for p in packets]
            both(lambda: coalesce(frames, udp_gro=udp, l2_len=14))
    else:
        data = rng.randbytes(rng.choice([0, 1, 2, 3, 19, 20, 64, 1499, 4096, rng.randint(0, 70000)]))
        initial = rng.choice([0, 1, 0xFFFE, 0xFFFF, rng.randint(0, 2**40)])
        both(lambda: ones_sum(data, initial))


CASES = 100_000


@pytest.fixture(autouse=True)
def implementation() -> None:
    """Overrides the suite-wide parametrisation: these tests switch implementations themselves."""


def test_a_hundred_thousand_generated_cases_agree() -> None:
    rng = random.Random(20261202)
    for _ in range(CASES):
        one_case(rng)


@settings(max_examples=2000, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hypothesis_cases_agree(rng: random.Random) -> None:
    one_case(rng)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.integers(0, 255), st.booleans())
def test_garbage_never_crashes_either(blob: bytes, gso_size: int, gso_type: int, udp: bool) -> None:
    hdr = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, 0, gso_size, 0, 0)
    both(lambda: split(hdr, blob))
    both(lambda: coalesce([blob, blob[::-1], blob[: len(blob) // 2]], udp_gro=udp))


def test_the_64k_edges_agree() -> None:
    """Super-packets at and over the 16-bit length limits (the overflow cases)."""
    for v6 in (False, True):
        src, dst = V6[0] if v6 else V4[0]
        for payload in (65535 - 60, 65535 - 40 - 20, 65535 - 20 - 20, 65535):
            if payload + (20 if v6 else 40) > 0xFFFF:
                continue  # no such packet: its own length field would overflow
            body = bytes(range(256)) * (payload // 256 + 1)
            pkt = pk.tcp_packet(src, dst, 1, 2, body[:payload], seq=1, ack=1, flags=0x10)
            for gso in (1000, 65000, 65535):
                hdr = VirtioNetHdr(
                    1, VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4, 0, gso, 0, 16
                )
                both(lambda: split(hdr, pkt))  # noqa: B023 (called at once)
    assert struct.calcsize("!H") == 2


def test_recv_multiples_copy_agrees() -> None:
    """RxQueue.drain_into: the same packets delivered, sizes, leftovers and errors."""
    from collections import deque

    from tunlab.devices._batch import RxQueue

    rng = random.Random(7)
    for _ in range(5000):
        packets = [rng.randbytes(rng.randint(0, 3000)) for _ in range(rng.randint(0, 8))]
        nbufs, room, offset = rng.randint(1, 6), rng.randint(0, 3000), rng.randint(0, 20)
        results = []
        for name in ("python", "compiled"):
            q = RxQueue()
            q.pending = deque(packets)
            bufs = [bytearray(room) for _ in range(nbufs)]
            sizes = [0] * nbufs
            with offload.using(name):
                try:
                    n = q.drain_into(bufs, sizes, offset)
                    results.append((n, sizes, [bytes(b) for b in bufs], list(q.pending)))
                except ValueError as exc:
                    results.append(("ValueError", str(exc), list(q.pending)))
        assert results[0] == results[1]
