"""The compiled batch calls against the reference: split_into, read_split, coalesce_slots and
coalesce_write give the packets split() and coalesce() give, byte for byte, on generated cases.

read_split and coalesce_write do their own I/O: a datagram socket pair stands in for the
device (one read or write is one frame there as on a TUN fd), so these run without root.
"""

from __future__ import annotations

import random
import socket
from array import array
from collections.abc import Iterator

import pytest

from tests.offload.test_differential import MAC, batch, super_packet
from tunlab.devices import offload
from tunlab.devices.offload import VirtioNetHdr, split
from tunlab.devices.offload import _impl as impl
from tunlab.devices.offload._gso import split_frame

pytestmark = pytest.mark.skipif(
    "compiled" not in offload.available(), reason="the compiled core is not built"
)
CASES = 3000


@pytest.fixture(autouse=True)
def implementation() -> None:
    """Overrides the suite-wide parametrisation: these tests call the compiled core directly."""


def reference(frame: bytes, tap: bool) -> list[bytes] | None:
    """What the pure Python split makes of a frame as read (None: it raises ValueError)."""
    hdr = VirtioNetHdr.decode(frame)
    try:
        with offload.using("python"):
            return (split_frame if tap else split)(hdr, memoryview(frame)[10:])
    except ValueError:
        return None


def frames(rng: random.Random, count: int) -> Iterator[tuple[bytes, bool]]:
    """(frame as read from a device, whether it is a TAP frame) — valid, odd and malformed."""
    for _ in range(count):
        hdr, pkt = super_packet(rng)
        tap = rng.random() < 0.2
        if tap:
            pkt = MAC + (b"\x86\xdd" if pkt[:1] and pkt[0] >> 4 == 6 else b"\x08\x00") + pkt
        yield hdr.encode() + pkt, tap


def split_all(frame: bytes, tap: bool, rng: random.Random) -> list[bytes] | None:
    """split_into called until the frame is delivered, into buffers of random sizes/forms."""
    fast = impl._compiled
    assert fast is not None
    out: list[bytes] = []
    start = 0
    while start >= 0:
        offset = rng.choice([0, 10, 16])
        room = rng.choice([65600, 2048, 1600, rng.randint(1, 70000)])
        count = rng.randint(1, 70)
        if rng.random() < 0.5:
            arena, sizes = bytearray(count * (room + offset)), array("I", bytes(4 * count))
            got = fast.split_into(frame, start, arena, sizes, offset, room + offset, tap)
            pieces = [arena[i * (room + offset) + offset :][: sizes[i]] for i in range(count)]
        else:
            bufs, lsizes = [bytearray(room + offset) for _ in range(count)], [0] * count
            got = fast.split_into(frame, start, bufs, lsizes, offset, 0, tap)
            pieces = [bufs[i][offset : offset + lsizes[i]] for i in range(count)]
        if got is None:
            assert start == 0, "a frame was planned, then refused half-way"
            return None
        delivered, nxt, need = got
        out += [bytes(p) for p in pieces[:delivered]]
        if not delivered:
            assert need > room, f"nothing delivered though {need} bytes fit {room}"
        start = nxt
    return out


def test_split_into_agrees_with_split() -> None:
    rng = random.Random(20261207)
    planned = 0
    for frame, tap in frames(rng, CASES):
        want = reference(frame, tap)
        got = split_all(frame, tap, rng)
        if want is None:
            assert got is None, "the compiled split accepted a frame the reference refuses"
        else:
            assert got == want or got is None
            planned += got is not None
    assert planned > CASES // 2  # the generated cases are mostly valid, and planned here


def test_split_bytes_agrees_with_split() -> None:
    """Each packet a bytes object, as split() makes them; refused where split() raises."""
    fast = impl._compiled
    assert fast is not None
    rng = random.Random(3)
    planned = 0
    for frame, tap in frames(rng, CASES):
        want, got = reference(frame, tap), fast.split_bytes(frame, tap)
        if want is None:
            assert got is None, "the compiled split accepted a frame the reference refuses"
        elif got is not None:
            assert got == want
            planned += 1
    assert planned > CASES // 2


def test_read_split_reads_what_is_queued_and_splits_it_as_split_does() -> None:
    fast = impl._compiled
    assert fast is not None
    rng = random.Random(11)
    refused = b"<refused: for the reference split>"
    slot = 65600
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rx, tx:
        rx.setblocking(False)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        buf = bytearray(70000)
        for _ in range(300):
            queued = [f for f, tap in frames(rng, rng.randint(1, 4)) if not tap]
            want: list[bytes] = []
            for f in queued:
                tx.send(f)
                want += reference(f, False) or [refused]
            slots = rng.choice([1, 8, 64, 128])
            arena, sizes = bytearray(slots * slot), array("I", bytes(4 * slots))
            got: list[bytes] = []
            reads = supers_seen = 0
            while reads < len(queued):
                n, last, delivered, nxt, _, supers, nbytes = fast.read_split(
                    rx.fileno(), buf, arena, slot, sizes, 10, False
                )
                assert n >= 1
                reads += n
                supers_seen += supers
                if delivered < 0:
                    got.append(refused)
                    continue
                pieces = [bytes(arena[i * slot + 10 :][: sizes[i]]) for i in range(delivered)]
                assert nbytes == sum(map(len, pieces))
                got += pieces
                frame = bytes(buf[:last])
                while nxt >= 0:  # the rest of the last frame, from the cursor on
                    k, nxt, _ = fast.split_into(frame, nxt, arena, sizes, 10, slot, False)
                    assert k > 0
                    got += [bytes(arena[i * slot + 10 :][: sizes[i]]) for i in range(k)]
                if nxt == -2:
                    got.append(refused)
            assert got == want
            assert supers_seen == sum(1 for f in queued if f[1])
        with pytest.raises(BlockingIOError):
            fast.read_split(rx.fileno(), buf, arena, slot, sizes, 10, False)


def test_read_split_waits_and_is_woken_by_the_stop_fd() -> None:
    fast = impl._compiled
    assert fast is not None
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stop_r, stop_w = socket.socketpair()
    with rx, tx, stop_r, stop_w:
        rx.setblocking(False)
        stop_w.send(b"x")
        arena, sizes = bytearray(4 * 2048), array("I", bytes(16))
        assert (
            fast.read_split(rx.fileno(), bytearray(2048), arena, 2048, sizes, 10, False, stop_r.fileno())[0]
            == 0
        )


def test_coalesce_slots_and_coalesce_write_agree_with_coalesce() -> None:
    fast = impl._compiled
    assert fast is not None
    rng = random.Random(5)
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rx, tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        for _ in range(1500):
            packets = [p for p in batch(rng) if len(p) <= 2000]
            if not packets:
                continue
            udp = rng.random() < 0.5
            with offload.using("python"):
                want = [f for _, f in fast.coalesce_ip(packets, udp)]
            arena, sizes = bytearray(len(packets) * 2048), array("I", bytes(4 * len(packets)))
            for i, p in enumerate(packets):
                arena[i * 2048 + 10 : i * 2048 + 10 + len(p)] = p
                sizes[i] = len(p)
            assert [f for _, f in fast.coalesce_slots(arena, 2048, sizes, len(packets), udp, 10)] == want
            consumed, written, blocked, errnos = fast.coalesce_write(
                tx.fileno(), arena, 2048, sizes, len(packets), udp, 10, -2
            )
            assert (consumed, written, blocked, errnos) == (len(want), sum(map(len, want)), 0, [])
            assert [rx.recv(70000) for _ in want] == want


def test_coalesce_write_reports_a_full_device_and_refusals() -> None:
    fast = impl._compiled
    assert fast is not None
    packet = bytes(range(200))
    arena, sizes = bytearray(4 * 256), array("I", [200] * 4)
    for i in range(4):
        arena[i * 256 + 10 : i * 256 + 210] = packet
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rx, tx:
        tx.setblocking(False)
        while True:  # fill the peer's queue
            try:
                tx.send(bytes(200))
            except BlockingIOError:
                break
        consumed, _, blocked, errnos = fast.coalesce_write(tx.fileno(), arena, 256, sizes, 4, False, 10, -2)
        assert (consumed, blocked, errnos) == (0, 1, [])
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.close()
    with a:
        consumed, written, blocked, errnos = fast.coalesce_write(
            a.fileno(), arena, 256, sizes, 4, False, 10, -2
        )
        assert consumed == 4 and written == 0 and not blocked and len(errnos) == 4  # each refused, counted
    with pytest.raises(ValueError, match="sizes\\[1\\] is 300"):
        fast.coalesce_slots(arena, 256, array("I", [200, 300]), 2, False, 10)
