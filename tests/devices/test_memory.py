"""Device logic over the in-memory backend: sync, batch, interrupts, async, framed, relay.

No root and no kernel: these run on every OS of the CI matrix, so the code above the backend
(SyncDevice, AsyncDevice, Framed, the relay pump) is checked everywhere it ships.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from tests.offload.helpers import tcp_fields, tcp_flow
from tunlab import DeviceBuilder, InterruptEvent, Layer
from tunlab.devices import GROTable, PacketBatch, VirtioNetHdr, offload
from tunlab.devices._aio import AsyncDevice
from tunlab.devices._sync import SyncDevice
from tunlab.devices.offload import (
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_LEN,
    coalesce,
)
from tunlab.errors import DeviceClosedError, UnsupportedOperationError
from tunlab.relay import Relay
from tunlab.relay._direction import Direction
from tunlab.relay._stages import Packet, Stage


def mem(**options: object) -> SyncDevice:
    b = DeviceBuilder().backend("memory")
    if options.get("layer") is Layer.L2:
        b.layer(Layer.L2)
    if options.get("offload"):
        b.offload(True)
    if "name" in options:
        b.name(str(options["name"]))
    return b.build_sync()


def super_frame(count: int = 8, mss: int = 1000) -> tuple[bytes, list[bytes]]:
    """A TCPv4 super-packet with its virtio-net header, and the segments it stands for."""
    segs = tcp_flow(count, mss)
    (frame,) = coalesce(segs)
    assert VirtioNetHdr.decode(frame).gso_type == VIRTIO_NET_HDR_GSO_TCPV4
    return frame, segs


# ---- sync -----------------------------------------------------------------------------------
def test_frames_cross_both_ways_unchanged() -> None:
    with mem() as dev:
        dev.backend.wire.inject(b"\x45hello")
        assert dev.recv() == b"\x45hello"
        buf = bytearray(64)
        dev.backend.wire.inject(b"\x45abc")
        assert dev.recv_into(buf) == 4 and bytes(buf[:4]) == b"\x45abc"
        assert dev.send(b"\x45out") == 4
        assert dev.backend.wire.take() == b"\x45out"


def test_an_empty_or_oversized_frame_is_refused_before_the_kernel_sees_it() -> None:
    with mem() as dev:
        with pytest.raises(ValueError, match="an empty frame carries no packet"):
            dev.send(b"")
        with pytest.raises(ValueError, match="larger than this device takes"):
            dev.send(bytes(dev.max_frame_size + 1))
        with pytest.raises(TypeError, match="expected bytes"):
            dev.send("text")  # type: ignore[arg-type]

    async def main() -> None:
        async with AsyncDevice(mem()) as adev:
            with pytest.raises(ValueError, match="an empty frame carries no packet"):
                await adev.send(b"")

    asyncio.run(main())


def test_blocking_recv_waits_and_nonblocking_says_so() -> None:
    with mem() as dev:
        threading.Timer(0.05, dev.backend.wire.inject, args=(b"late",)).start()
        t0 = time.monotonic()
        assert dev.recv() == b"late"
        assert time.monotonic() - t0 >= 0.04
        dev.set_nonblocking(True)
        assert dev.is_nonblocking
        with pytest.raises(BlockingIOError):
            dev.recv()


def test_recv_multiple_without_offload_lands_in_the_callers_buffer() -> None:
    with mem() as dev:
        dev.set_nonblocking(True)
        dev.backend.wire.inject(b"\x45" + b"a" * 99, b"\x45" + b"b" * 49)
        bufs = [bytearray(200) for _ in range(4)]
        sizes = [0] * 4
        n = dev.recv_multiple(bufs, sizes, offset=20)
        assert n == 2 and sizes[:2] == [100, 50]
        assert bytes(bufs[0][20:120]) == b"\x45" + b"a" * 99
        assert bytes(bufs[1][20:70]) == b"\x45" + b"b" * 49


def test_a_packet_larger_than_the_buffer_is_kept_not_truncated() -> None:
    with mem() as dev:
        dev.backend.wire.inject(b"\x45" + b"z" * 299)
        small, sizes = [bytearray(100)], [0]
        with pytest.raises(ValueError, match="give buffers of at least 300 bytes"):
            dev.recv_multiple(small, sizes)
        big = [bytearray(400)]
        assert dev.recv_multiple(big, sizes) == 1
        assert sizes[0] == 300 and bytes(big[0][:300]) == b"\x45" + b"z" * 299


def test_recv_multiple_splits_a_super_packet_and_keeps_what_does_not_fit() -> None:
    frame, segs = super_frame(8)
    with mem(offload=True) as dev:
        assert dev.tcp_gso
        dev.backend.wire.inject(frame)
        bufs = [bytearray(2000) for _ in range(5)]
        sizes = [0] * 5
        assert dev.recv_multiple(bufs, sizes) == 5
        assert dev.recv_multiple(bufs, sizes) == 3  # the rest waited, nothing lost
        assert [tcp_fields(bytes(bufs[i][: sizes[i]]))["payload"] for i in range(3)] == [
            tcp_fields(s)["payload"] for s in segs[5:]
        ]


def test_send_multiple_coalesces_into_one_super_packet() -> None:
    segs = tcp_flow(6, 1000)
    with mem(offload=True) as dev:
        bufs = [bytes(VIRTIO_NET_HDR_LEN) + s for s in segs]
        before = [bytes(b) for b in bufs]
        written = dev.send_multiple(GROTable(), bufs, VIRTIO_NET_HDR_LEN)
        (out,) = dev.backend.wire.take_all()
        assert written == len(out)
        hdr = VirtioNetHdr.decode(out)
        assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and hdr.gso_size == 1000
        assert bufs == before  # the caller's buffers are never modified
        with pytest.raises(ValueError, match="offset >= 10"):
            dev.send_multiple(None, bufs, 0)


@pytest.mark.parametrize("implementation", ["compiled", "python"])
def test_a_packet_batch_takes_a_super_packet_and_gives_it_back_coalesced(implementation: str) -> None:
    """recv_multiple(batch) splits into the arena (the rest waits when it is full);
    send_multiple(table, batch) coalesces what it holds, as the list forms do."""
    if implementation not in offload.available():
        pytest.skip("the compiled offload core is not built here")
    frame, segs = super_frame(8)
    with offload.using(implementation), mem(offload=True) as dev:
        batch = PacketBatch(5, packet_size=2000)
        dev.backend.wire.inject(frame)
        assert dev.recv_multiple(batch) == 5 == len(batch)
        assert [bytes(p) for p in batch] == segs[:5]
        first = [bytes(p) for p in batch]
        assert dev.recv_multiple(batch) == 3  # the rest waited, nothing lost
        assert [bytes(p) for p in batch] == segs[5:]
        whole = PacketBatch(8, packet_size=2000)
        for s in first + segs[5:]:
            whole.append(s)
        written = dev.send_multiple(GROTable(), whole)
        (out,) = dev.backend.wire.take_all()
        assert written == len(out) and out == frame
        with pytest.raises(ValueError, match="carries its own sizes and offset"):
            dev.recv_multiple(batch, [0] * 8)
        batch.clear()
        with pytest.raises(ValueError, match="holds no packets"):
            dev.send_multiple(None, batch)


def test_an_async_device_fills_and_sends_a_packet_batch() -> None:
    frame, segs = super_frame(6)

    async def main() -> None:
        async with AsyncDevice(mem(offload=True)) as adev:
            batch = PacketBatch(8, packet_size=2000)
            adev.sync.backend.wire.inject(frame)
            assert await adev.recv_multiple(batch) == 6
            assert [bytes(p) for p in batch] == segs
            assert await adev.send_multiple(GROTable(), batch) == len(frame)
            assert adev.sync.backend.wire.take_all() == [frame]

    asyncio.run(main())


def test_a_packet_batch_too_small_for_a_packet_says_how_to_make_one_that_fits() -> None:
    frame, segs = super_frame(3, mss=1000)
    with mem(offload=True) as dev:
        dev.backend.wire.inject(frame)
        tiny = PacketBatch(4, packet_size=100)
        with pytest.raises(ValueError, match=r"PacketBatch\(packet_size=\d+\)"):
            dev.recv_multiple(tiny)
        assert dev.recv_multiple(PacketBatch(4, packet_size=1500)) == 3  # kept, then delivered


def test_a_packet_batch_works_without_offload_too() -> None:
    """No virtio header: each packet read lands in a slot as it is; each is written alone."""
    with mem() as dev:
        dev.backend.wire.inject(b"\x45one")
        batch = PacketBatch(4, packet_size=1500)
        assert dev.recv_multiple(batch) == 1 and bytes(batch[0]) == b"\x45one"
        batch.append(b"\x45two")
        assert dev.send_multiple(None, batch) == 8
        assert dev.backend.wire.take_all() == [b"\x45one", b"\x45two"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_an_empty_packet_batch_costs_no_memory_for_its_slots() -> None:
    """128 slots of 64 KiB are 8 MiB of address space, but pages only where packets land."""

    def resident_kib() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    before = resident_kib()
    batch = PacketBatch()
    grew = resident_kib() - before
    assert len(batch.arena) >= 128 * 65557
    assert grew < 1024, f"a fresh PacketBatch made {grew} KiB resident"


def test_packet_batch_checks_what_it_is_given() -> None:
    batch = PacketBatch(2, packet_size=64, offset=4)
    assert batch.slot_size % 64 == 0 and batch.slot_size >= 68 and len(batch) == 0
    batch.append(b"\x45abc")
    assert bytes(batch[0]) == b"\x45abc" and bytes(batch[-1]) == b"\x45abc"
    assert bytes(batch.slots[0][4:8]) == b"\x45abc" and len(batch.room(1)) == 64
    batch[0][1:2] = b"X"  # packets are writable views of the arena
    assert bytes(batch.arena[5:6]) == b"X"
    with pytest.raises(ValueError, match="packet_size=65"):
        batch.append(bytes(65))
    batch.append(b"\x45")
    with pytest.raises(ValueError, match="full"):
        batch.append(b"\x45")
    with pytest.raises(IndexError, match="holds 2"):
        batch[2]
    assert "2/2 packets" in repr(batch)
    for bad in ({"capacity": 0}, {"packet_size": True}, {"offset": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PacketBatch(**bad)  # type: ignore[arg-type]


def test_send_multiple_without_offload_writes_each_packet() -> None:
    with mem() as dev:
        dev.send_multiple(None, [b"xx\x45one", b"xx\x45two"], 2)
        assert dev.backend.wire.take_all() == [b"\x45one", b"\x45two"]


def test_interrupt_and_timeout() -> None:
    with mem() as dev, InterruptEvent() as event:
        threading.Timer(0.05, event.trigger).start()
        with pytest.raises(InterruptedError):
            dev.recv_intr(bytearray(100), event)
        event.reset()
        with pytest.raises(TimeoutError):
            dev.wait_readable_intr(event, timeout=0.05)
        dev.backend.wire.inject(b"queued")
        event.trigger()  # a frame already queued wins over the interrupt
        assert dev.recv_intr(bytearray(100), event) == 6
        with pytest.raises(ValueError, match="negative"):
            dev.wait_readable_intr(event, timeout=-1)
        with pytest.raises(TypeError, match="InterruptEvent"):
            dev.wait_readable_intr(None, timeout=1)  # type: ignore[arg-type]


def test_closed_device_and_configuration() -> None:
    dev = mem(layer=Layer.L2, name="memcfg0")
    dev.set_mtu(9000)
    dev.add_address_v4("198.18.40.1", 24)
    dev.add_address_v6("2001:db8:40::1", 64)
    dev.set_mac_address("02:00:5e:00:53:41")
    assert dev.mtu == 9000 and dev.mac_address == "02:00:5e:00:53:41"
    assert {str(a) for a in dev.addresses()} == {"198.18.40.1/24", "2001:db8:40::1/64"}
    dev.remove_address("198.18.40.1")
    dev.set_name("memcfg1")
    assert dev.name == "memcfg1" and dev.is_running
    dev.close()
    with pytest.raises(DeviceClosedError):
        dev.recv()
    with pytest.raises(DeviceClosedError):
        dev.send(b"x")


def test_builder_refuses_what_the_backend_lacks_before_creating() -> None:
    for option, call in (
        ("multi_queue(True)", lambda b: b.multi_queue(True)),
        ("netns", lambda b: b.netns("somewhere")),
        ("owner", lambda b: b.owner(1000)),
        ("persist(True)", lambda b: b.persist(True)),
    ):
        builder = DeviceBuilder().backend("memory").name("memrefused")
        call(builder)
        with pytest.raises(UnsupportedOperationError) as info:
            builder.build_sync()
        assert option in str(info.value) and "memory" in str(info.value)
    mem(name="memrefused").close()  # nothing was created by the refused builds: the name is free


# ---- async ----------------------------------------------------------------------------------
def _loops() -> list[str]:
    out = ["asyncio"]
    if sys.platform != "win32":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pass
        else:
            out.append("uvloop")
    return out


def _run(kind: str, main: object) -> None:
    if kind == "uvloop":
        import uvloop

        uvloop.run(main)  # type: ignore[arg-type]
    else:
        asyncio.run(main)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", _loops())
def test_async_recv_waits_on_readiness(kind: str) -> None:
    async def main() -> None:
        dev = AsyncDevice(mem())
        wire = dev.sync.backend.wire
        asyncio.get_running_loop().call_later(0.05, wire.inject, b"\x45async")
        assert await asyncio.wait_for(dev.recv(), 5) == b"\x45async"
        await dev.send(b"\x45back")
        assert wire.take() == b"\x45back"
        waiter = asyncio.ensure_future(dev.recv())
        await asyncio.sleep(0.02)
        dev.close()
        with pytest.raises(DeviceClosedError):
            await asyncio.wait_for(waiter, 5)

    _run(kind, main())


def test_async_send_waits_while_the_device_is_full() -> None:
    async def main() -> None:
        dev = AsyncDevice(mem())
        wire = dev.sync.backend.wire
        wire.capacity = 2
        for i in range(2):
            await dev.send(bytes([0x45, i]))
        pending = asyncio.ensure_future(dev.send(b"\x45third"))
        await asyncio.sleep(0.05)
        assert not pending.done()  # backpressure: it waits, it does not drop
        assert wire.take() == bytes([0x45, 0])
        await asyncio.wait_for(pending, 5)
        assert wire.take_all() == [bytes([0x45, 1]), b"\x45third"]
        dev.close()

    asyncio.run(main())


def test_trio_recv_and_framed() -> None:
    trio = pytest.importorskip("trio")
    frame, segs = super_frame(6)

    async def main() -> None:
        dev = AsyncDevice(mem(offload=True))
        wire = dev.sync.backend.wire
        wire.inject(frame)
        got = []
        async with dev.framed() as framed:
            for _ in segs:
                got.append(await framed.recv())
            for seg in segs:
                await framed.send(seg)
        assert [tcp_fields(g)["payload"] for g in got] == [tcp_fields(s)["payload"] for s in segs]
        (out,) = wire.take_all()  # the writer coalesced the batch on close
        assert VirtioNetHdr.decode(out).gso_size == 1000
        dev.close()

    trio.run(main)


# ---- relay ----------------------------------------------------------------------------------
def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_relay_passthrough_over_memory_devices() -> None:
    a, b = mem(), mem()
    with Relay(a, b) as relay:
        a.backend.wire.inject(*(bytes([0x45, i]) * 50 for i in range(20)))
        b.backend.wire.inject(b"\x45reverse")
        got = [b.backend.wire.take() for _ in range(20)]
        assert got == [bytes([0x45, i]) * 50 for i in range(20)]
        assert a.backend.wire.take() == b"\x45reverse"
        _wait_for(lambda: relay.stats[Direction.A_TO_B].frames_out == 20)
        assert relay.stats[Direction.A_TO_B].bytes_in == 20 * 100
    a.close()
    b.close()


def test_relay_batch_with_a_hook_sees_every_packet_and_can_drop() -> None:
    frame, segs = super_frame(8)
    seen: list[int] = []

    def hook(direction: str, packets: list[bytes]) -> list[bytes]:
        seen.append(len(packets))
        return packets[1:]  # drop the first segment of each batch

    a, b = mem(offload=True), mem(offload=True)
    with Relay(a, b, mode="batch", hook=hook):
        a.backend.wire.inject(frame)
        out = b.backend.wire.take()
    hdr = VirtioNetHdr.decode(out)
    assert seen == [8]
    assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4  # the 7 left are contiguous: merged again
    assert len(out) - VIRTIO_NET_HDR_LEN == len(segs[1]) + 6 * 1000
    a.close()
    b.close()


class HoldFor(Stage):
    """Delays every packet by a fixed time (a minimal delay line, to test deadlines)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.held: list[tuple[float, bytes]] = []

    def process(self, packets: list[Packet], now: float) -> list[Packet]:
        self.held += [(now + self.seconds, bytes(p)) for p in packets]
        due = [p for t, p in self.held if t <= now]
        self.held = [(t, p) for t, p in self.held if t > now]
        return list(due)

    def next_deadline(self) -> float | None:
        return self.held[0][0] if self.held else None


def test_relay_stage_deadlines_release_packets_without_new_traffic() -> None:
    a, b = mem(), mem()
    with Relay(a, b, mode="batch", stages={Direction.A_TO_B: [HoldFor(0.15)]}):
        t0 = time.monotonic()
        a.backend.wire.inject(b"\x45" + b"d" * 40)
        assert b.backend.wire.take() == b"\x45" + b"d" * 40
        waited = time.monotonic() - t0
    assert waited >= 0.14, waited  # held for its delay, released by the deadline alone
    a.close()
    b.close()


def test_relay_stops_while_traffic_flows() -> None:
    a, b = mem(), mem()
    relay = Relay(a, b).start()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            a.backend.wire.inject(b"\x45flood")
            b.backend.wire.take_all()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        _wait_for(lambda: relay.stats[Direction.A_TO_B].frames_in > 100)
        relay.stop(timeout=2.0)
        assert not relay.running
    finally:
        stop.set()
        t.join(2)
        relay.stop()
        a.close()
        b.close()


def test_relay_refuses_mismatched_devices() -> None:
    a, b = mem(offload=True), mem()
    with pytest.raises(ValueError, match="offload on both devices"):
        Relay(a, b)
    with pytest.raises(UnsupportedOperationError, match="handoff"):
        Relay(a, mem(offload=True), workers="processes")
    with pytest.raises(ValueError, match="mode='batch'"):
        Relay(a, b, mode="passthrough", stages={Direction.A_TO_B: [HoldFor(0.1)]})
    a.close()
    b.close()


def test_the_gso_none_header_of_unmerged_packets() -> None:
    with mem(offload=True) as dev:
        dev.send_multiple(None, [bytes(10) + b"\x45\x00" + bytes(30)], 10)
        (out,) = dev.backend.wire.take_all()
        assert VirtioNetHdr.decode(out).gso_type == VIRTIO_NET_HDR_GSO_NONE


def test_async_with_awaits_aclose_and_wakes_a_pending_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving `async with` is aclose(), not close(): a task waiting to read is woken with
    DeviceClosedError (on Windows aclose also lets handle waiters leave before handles close)."""
    awaited: list[bool] = []
    real_aclose = AsyncDevice.aclose

    async def spy(self: AsyncDevice) -> None:
        awaited.append(True)
        await real_aclose(self)

    monkeypatch.setattr(AsyncDevice, "aclose", spy)

    async def main() -> BaseException | None:
        dev = AsyncDevice(mem())
        async with dev:
            reader = asyncio.ensure_future(dev.recv())
            await asyncio.sleep(0.05)
            assert not reader.done()
        try:
            await asyncio.wait_for(reader, 5)
        except BaseException as exc:  # the reader's own failure
            return exc
        return None

    got = asyncio.run(main())
    assert awaited == [True]
    assert isinstance(got, DeviceClosedError), got
