"""Done awaitables (devices/_ready.py) and the framed loop that hands them out: the compiled
Ready and the pure-Python fallback give the same values, under asyncio and trio alike."""

from __future__ import annotations

import asyncio
import collections
import gc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.devices.test_memory import mem, super_frame
from tests.offload.helpers import tcp_fields
from tunlab.devices import VirtioNetHdr, _framed, _ready
from tunlab.devices._aio import AsyncDevice
from tunlab.devices.offload import _impl
from tunlab.errors import DeviceClosedError

COMPILED = getattr(_impl.compiled_core(), "ready", None)
READIES: list[Any] = [pytest.param(_ready._coroutine, id="pure")]
if COMPILED is not None:
    READIES.insert(0, pytest.param(COMPILED, id="compiled"))


@pytest.mark.parametrize("ready", READIES)
@pytest.mark.parametrize("value", [b"\x45packet", None, (1, 2), StopIteration("inner")])
def test_awaiting_a_ready_gives_its_value(ready: Callable[[Any], Awaitable[Any]], value: Any) -> None:
    async def main() -> Any:
        return await ready(value)

    assert asyncio.run(main()) is value


def test_the_pure_done_may_be_awaited_again() -> None:
    done = _ready._Done()

    async def main() -> list[Any]:
        return [await done, await done, await done]

    assert asyncio.run(main()) == [None, None, None]


def test_the_compiled_ready_may_be_awaited_again_and_driven_by_hand() -> None:
    if COMPILED is None:
        pytest.skip("the compiled core is not built here (TUNLAB_PURE=1 or no C compiler)")
    once = COMPILED((3, 4))

    async def main() -> list[Any]:
        return [await once, await once, await _ready.DONE]

    assert asyncio.run(main()) == [(3, 4), (3, 4), None]
    with pytest.raises(StopIteration) as info:
        next(iter(once.__await__()))
    assert info.value.value == (3, 4)  # a tuple stays one value, not the exception's args


def _framed_loop(run: Callable[[Callable[[], Awaitable[None]]], None]) -> None:
    """A relay's loop over a memory device: split packets in order, coalesced on flush."""
    frame, segs = super_frame(6)
    dev = AsyncDevice(mem(offload=True))
    wire = dev.sync.backend.wire

    async def main() -> None:
        wire.inject(frame)
        got = []
        reader = writer = dev.framed()
        async for packet in reader:
            got.append(packet)
            await writer.send(packet)
            if not reader.buffered:
                await writer.flush()
                break
        assert [tcp_fields(g)["payload"] for g in got] == [tcp_fields(s)["payload"] for s in segs]
        (out,) = wire.take_all()
        assert VirtioNetHdr.decode(out).gso_size == 1000
        await writer.aclose()
        with pytest.raises(DeviceClosedError):
            writer.send(segs[0])  # refused when called, before any await

    try:
        run(main)
    finally:
        dev.close()


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_the_framed_loop_under_asyncio(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if compiled and COMPILED is None:
        pytest.skip("the compiled core is not built here")
    if not compiled:
        monkeypatch.setattr(_framed, "ready", _ready._coroutine)
        monkeypatch.setattr(_framed, "DONE", _ready._Done())
        monkeypatch.setattr(_framed, "packet_reader", _ready._PacketReader)
    _framed_loop(lambda main: asyncio.run(main()))


def test_the_framed_loop_under_trio() -> None:
    trio = pytest.importorskip("trio")
    _framed_loop(trio.run)


def test_a_full_batch_is_written_when_its_send_is_awaited() -> None:
    frame, segs = super_frame(4)
    dev = AsyncDevice(mem(offload=True))
    wire = dev.sync.backend.wire

    async def main() -> None:
        writer = dev.framed_writer(batch_size=4)
        for seg in segs[:3]:
            await writer.send(seg)
        assert writer.pending == 3 and not wire.take_all()
        last = writer.send(segs[3])  # queued now; written when awaited
        assert writer.pending == 4
        await last
        assert writer.pending == 0
        assert len(wire.take_all()) == 1

    try:
        asyncio.run(main())
    finally:
        dev.close()


READERS: list[Any] = [pytest.param(_ready._PacketReader, id="pure")]
if getattr(_impl.compiled_core(), "packet_reader", None) is not None:
    READERS.insert(0, pytest.param(_impl.compiled_core().packet_reader, id="compiled"))  # type: ignore[union-attr]


@pytest.mark.parametrize("reader", READERS)
def test_a_packet_reader_gives_queued_packets_then_waits_on_the_fallback(reader: Any) -> None:
    pending = collections.deque([b"a", b"b"])
    reads = [b"c"]

    async def fallback() -> bytes:
        await asyncio.sleep(0)  # a real wait: the loop runs
        if not reads:
            raise StopAsyncIteration
        return reads.pop()

    async def main() -> list[bytes]:
        got = []
        async for packet in reader(pending, fallback):
            got.append(packet)
            if packet == b"a":
                pending.append(b"a2")  # queued while iterating: still in order
        return got

    assert asyncio.run(main()) == [b"a", b"b", b"a2", b"c"]


@pytest.mark.parametrize("reader", READERS)
def test_a_packet_reader_in_a_reference_cycle_is_collected(reader: Any) -> None:
    class Holder:
        reader: object = None

        async def fallback(self) -> bytes:
            raise StopAsyncIteration

    holder = Holder()
    holder.reader = reader(collections.deque(), holder.fallback)  # holder -> reader -> holder
    gone = weakref.ref(holder)
    del holder
    gc.collect()
    assert gone() is None
