"""Framed: packet-level async I/O over an AsyncDevice (tun-rs's DeviceFramed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Protocol

from tunlab.devices._backend import Bytes
from tunlab.devices._batch import batch_frames
from tunlab.devices._ready import DONE, packet_reader, ready
from tunlab.devices._sync import SyncDevice
from tunlab.devices.offload import IDEAL_BATCH_SIZE, GROTable
from tunlab.errors import DeviceClosedError


class FramedDevice(Protocol):
    """What Framed needs of an AsyncDevice: its sync half, one packet in, frames out."""

    @property
    def sync(self) -> SyncDevice: ...

    async def next_packet(self) -> bytes: ...

    async def write_frames(self, frames: Sequence[Bytes]) -> int: ...


class Framed:
    """Packet-level I/O over an AsyncDevice: an async iterator of packets and a batching writer.

    Reading yields IP packets (frames for TAP), split from super-packets when offload is on.
    Writing collects up to batch_size packets and writes them coalesced on flush(), when the
    batch is full, and on aclose(); writes wait while the device is not writable.
    """

    def __init__(self, device: FramedDevice, batch_size: int = IDEAL_BATCH_SIZE) -> None:
        if not 1 <= batch_size <= 65535:
            raise ValueError(f"batch_size: {batch_size} is outside 1..65535")
        self.device = device
        self.batch_size = batch_size
        self._batch: list[Bytes] = []
        self._table = GROTable()
        self._closed = False
        self._pending = device.sync.receiver.pending  # packets split from the last read

    # read half
    def __aiter__(self) -> AsyncIterator[bytes]:
        """Packets as they come: those already split without a coroutine or Python call each
        (the compiled core's iterator), then a read of the device."""
        return packet_reader(self._pending, self._read_next)

    def __anext__(self) -> Awaitable[bytes]:
        pending = self._pending
        if pending:  # a super-packet split earlier (the common case): done now, no coroutine
            return ready(pending.popleft())
        return self._read_next()

    async def _read_next(self) -> bytes:
        try:
            return await self.recv()
        except DeviceClosedError:
            raise StopAsyncIteration from None

    async def recv(self) -> bytes:
        """The next packet."""
        return await self.device.next_packet()

    @property
    def buffered(self) -> int:
        """Packets already split from the last read, yielded without touching the device: a
        relay flushes its writer when this is 0 (the burst that arrived together is over)."""
        return len(self._pending)

    # write half
    @property
    def pending(self) -> int:
        """Packets waiting in the current batch."""
        return len(self._batch)

    def send(self, packet: Bytes) -> Awaitable[None]:
        """Queue one packet (await it); a full batch is flushed before the await returns.

        The packet joins the batch when send() is called; only a flush waits on the device."""
        if self._closed:
            raise DeviceClosedError("send() on a closed Framed writer")
        batch = self._batch
        batch.append(packet)
        if len(batch) >= self.batch_size:
            return self._flush_full()
        return DONE

    async def _flush_full(self) -> None:
        await self.flush()

    async def flush(self) -> int:
        """Coalesce and write the batch; returns the bytes written."""
        if not self._batch:
            return 0
        batch, self._batch = self._batch, []
        dev = self.device
        return await dev.write_frames(batch_frames(dev.sync.backend, batch, 0, self._table))

    async def aclose(self) -> None:
        """Flush what is queued; the device stays open."""
        if not self._closed:
            try:
                await self.flush()
            finally:
                self._closed = True

    async def __aenter__(self) -> Framed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
