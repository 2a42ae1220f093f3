"""AsyncDevice: the device API for asyncio (default, uvloop included) and trio.

Reads and writes go straight to the non-blocking fd; only when the kernel says EAGAIN does the
task wait for readiness: through the loop's reader/writer callbacks on asyncio (no thread per
read) and trio.lowlevel.wait_readable on trio. Configuration runs in a worker thread so the
event loop never blocks on netlink.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import sys
from collections.abc import AsyncIterator, Callable, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tunlab.devices.backend import IPAddress, IPInterface
from tunlab.devices.batch import RxQueue, check_batch_args, frames_to_send
from tunlab.devices.layer import Layer
from tunlab.devices.offload import IDEAL_BATCH_SIZE, GROTable
from tunlab.devices.sync import SyncDevice
from tunlab.errors import DeviceClosedError, SendMultipleError

if TYPE_CHECKING:
    from typing_extensions import Self

    from tunlab.linux.netns import NetNamespace

T = TypeVar("T")
Bytes = bytes | bytearray | memoryview


def _runtime() -> str:
    """'asyncio' or 'trio': the library running the current task."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    raise RuntimeError("AsyncDevice needs a running asyncio or trio event loop")


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a worker thread of the running library (asyncio or trio)."""
    call = functools.partial(fn, *args)
    if _runtime() == "trio":
        import trio

        return await trio.to_thread.run_sync(call)
    return await asyncio.get_running_loop().run_in_executor(None, call)


class AsyncDevice:
    """A TUN/TAP device for async code; wraps a SyncDevice (its fd becomes non-blocking)."""

    def __init__(self, device: SyncDevice) -> None:
        if not isinstance(device, SyncDevice):
            raise TypeError(f"AsyncDevice wraps a SyncDevice, got {type(device).__name__}")
        device.set_nonblocking(True)
        self._dev = device
        self._fd = device.fileno()
        self._rx = RxQueue()
        self._rxbuf = bytearray(device.max_frame_size)
        self._read_waiters: list[asyncio.Future[None]] = []
        self._write_waiters: list[asyncio.Future[None]] = []
        self._trio_events: dict[bool, Any] = {}
        self._closed = False

    @classmethod
    def from_fd(cls, fd: int) -> Self:
        """Take ownership of an open TUN/TAP fd (the Android VpnService path)."""
        return cls(SyncDevice.from_fd(fd))

    def into_fd(self) -> int:
        """Give up the fd (left non-blocking); this device is closed, the fd is not."""
        self._closing()
        return self._dev.into_fd()

    @property
    def sync(self) -> SyncDevice:
        """The underlying SyncDevice (blocking configuration calls; keep them off the loop)."""
        return self._dev

    # ---- readiness --------------------------------------------------------------------------
    def _check_open(self) -> int:
        if self._closed:
            raise DeviceClosedError()
        return self._fd

    async def _wait(self, write: bool) -> None:
        fd = self._check_open()
        if _runtime() == "trio":
            await self._wait_trio(fd, write)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._write_waiters if write else self._read_waiters
        if not waiters:  # one loop callback per fd and direction, shared by every waiting task
            if write:
                loop.add_writer(fd, self._wake, loop, True)
            else:
                loop.add_reader(fd, self._wake, loop, False)
        waiters.append(fut)
        try:
            await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)
                if not waiters and not self._closed:
                    (loop.remove_writer if write else loop.remove_reader)(fd)

    async def _wait_trio(self, fd: int, write: bool) -> None:
        """trio lets one task wait per fd and direction: the others wait on its Event."""
        import trio

        current = self._trio_events.get(write)
        if current is not None:
            await current.wait()  # may wake spuriously: callers retry their read/write
            self._check_open()
            return
        event = self._trio_events[write] = trio.Event()
        try:
            if write:
                await trio.lowlevel.wait_writable(fd)
            else:
                await trio.lowlevel.wait_readable(fd)
        except trio.ClosedResourceError:
            raise DeviceClosedError("the device was closed while a task waited on it") from None
        finally:
            del self._trio_events[write]
            event.set()
        self._check_open()

    def _wake(self, loop: asyncio.AbstractEventLoop, write: bool) -> None:
        waiters = self._write_waiters if write else self._read_waiters
        (loop.remove_writer if write else loop.remove_reader)(self._fd)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    async def readable(self) -> None:
        """Wait until a read would not block."""
        await self._wait(False)

    async def writable(self) -> None:
        """Wait until a write would not block."""
        await self._wait(True)

    # ---- I/O --------------------------------------------------------------------------------
    def try_recv(self, bufsize: int | None = None) -> bytes:
        """One frame if one is queued, else BlockingIOError."""
        return os.read(self._check_open(), bufsize or self._dev.max_frame_size)

    def try_recv_into(self, buffer: bytearray | memoryview) -> int:
        return os.readv(self._check_open(), (buffer,))

    def try_send(self, data: Bytes) -> int:
        """Write one frame if the device accepts it now, else BlockingIOError."""
        return os.write(self._check_open(), data)

    async def recv(self, bufsize: int | None = None) -> bytes:
        """Read one frame (never truncated with the default size)."""
        while True:
            try:
                return self.try_recv(bufsize)
            except BlockingIOError:
                await self._wait(False)

    async def recv_into(self, buffer: bytearray | memoryview) -> int:
        while True:
            try:
                return self.try_recv_into(buffer)
            except BlockingIOError:
                await self._wait(False)

    async def send(self, data: Bytes) -> int:
        while True:
            try:
                return self.try_send(data)
            except BlockingIOError:
                await self._wait(True)

    async def recv_multiple(
        self,
        bufs: Sequence[bytearray | memoryview],
        sizes: MutableSequence[int],
        offset: int = 0,
    ) -> int:
        """SyncDevice.recv_multiple without blocking: segments that do not fit wait, unlost."""
        check_batch_args(bufs, sizes, offset, vnet=False, send=False)
        return (await self._fill_rx()).drain_into(bufs, sizes, offset)

    async def _fill_rx(self) -> RxQueue:
        """The receive queue, after one read if it was empty (waiting while nothing is queued)."""
        while not self._rx.pending:
            try:
                n = self.try_recv_into(self._rxbuf)
            except BlockingIOError:
                await self._wait(False)
                continue
            self._rx.feed(memoryview(self._rxbuf)[:n], vnet=self._dev.backend.vnet_hdr, layer=self.layer)
        return self._rx

    async def send_multiple(self, gro_table: GROTable | None, bufs: Sequence[Bytes], offset: int) -> int:
        """SyncDevice.send_multiple, waiting (not blocking) when the device is full."""
        vnet = self._dev.backend.vnet_hdr
        check_batch_args(bufs, None, offset, vnet=vnet, send=True)
        frames = frames_to_send(
            bufs, offset, vnet=vnet, layer=self.layer, udp_gro=self._dev.udp_gso, table=gro_table
        )
        return await self._write_frames(frames)

    async def _write_frames(self, frames: Sequence[Bytes]) -> int:
        written = 0
        errors: list[OSError] = []
        for frame in frames:
            while True:
                try:
                    written += self.try_send(frame)
                    break
                except BlockingIOError:
                    await self._wait(True)
                except DeviceClosedError:
                    raise
                except OSError as exc:
                    errors.append(exc)
                    break
        if errors:
            raise SendMultipleError(written, errors)
        return written

    # ---- framed I/O -------------------------------------------------------------------------
    def framed(self, batch_size: int = IDEAL_BATCH_SIZE) -> Framed:
        """Both halves: `async for packet in framed`, and `await framed.send(packet)`."""
        return Framed(self, batch_size)

    def framed_writer(self, batch_size: int = IDEAL_BATCH_SIZE) -> Framed:
        """The writer half (tun-rs's name): a Framed, whose read half stays usable too."""
        return self.framed(batch_size)

    # ---- configuration (in a worker thread: netlink must not block the loop) -----------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        return await run_in_thread(fn, *args)

    @property
    def name(self) -> str:
        """The interface name (one quick ioctl on the fd: fine on the loop)."""
        return self._dev.name

    @property
    def layer(self) -> Layer:
        return self._dev.layer

    @property
    def tcp_gso(self) -> bool:
        return self._dev.tcp_gso

    @property
    def udp_gso(self) -> bool:
        return self._dev.udp_gso

    @property
    def max_frame_size(self) -> int:
        return self._dev.max_frame_size

    def fileno(self) -> int:
        return self._check_open()

    async def set_name(self, name: str) -> None:
        await self._call(self._dev.set_name, name)

    async def if_index(self) -> int:
        return await self._call(lambda: self._dev.if_index)

    async def mtu(self) -> int:
        return await self._call(lambda: self._dev.mtu)

    async def set_mtu(self, mtu: int) -> None:
        await self._call(self._dev.set_mtu, mtu)

    async def addresses(self) -> list[IPInterface]:
        return await self._call(self._dev.addresses)

    async def add_address_v4(
        self,
        address: str | ipaddress.IPv4Address,
        prefix: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        await self._call(self._dev.add_address_v4, address, prefix, destination)

    async def add_address_v6(self, address: str | ipaddress.IPv6Address, prefix: int = 128) -> None:
        await self._call(self._dev.add_address_v6, address, prefix)

    async def remove_address(self, address: str | IPAddress) -> None:
        await self._call(self._dev.remove_address, address)

    async def set_network_address(
        self,
        address: str | ipaddress.IPv4Address,
        mask: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        await self._call(self._dev.set_network_address, address, mask, destination)

    async def enabled(self, up: bool) -> None:
        await self._call(self._dev.enabled, up)

    async def is_running(self) -> bool:
        return await self._call(lambda: self._dev.is_running)

    async def mac_address(self) -> str:
        return await self._call(lambda: self._dev.mac_address)

    async def set_mac_address(self, mac: str | bytes) -> None:
        await self._call(self._dev.set_mac_address, mac)

    async def broadcast(self) -> ipaddress.IPv4Address | None:
        return await self._call(lambda: self._dev.broadcast)

    async def set_broadcast(self, address: str | ipaddress.IPv4Address) -> None:
        await self._call(self._dev.set_broadcast, address)

    async def tx_queue_len(self) -> int:
        return await self._call(lambda: self._dev.tx_queue_len)

    async def set_tx_queue_len(self, length: int) -> None:
        await self._call(self._dev.set_tx_queue_len, length)

    async def persist(self, enable: bool = True) -> None:
        await self._call(self._dev.persist, enable)

    async def set_owner(self, uid: int) -> None:
        await self._call(self._dev.set_owner, uid)

    async def set_group(self, gid: int) -> None:
        await self._call(self._dev.set_group, gid)

    async def netns(self) -> NetNamespace:
        return await self._call(self._dev.netns)

    async def try_clone(self) -> AsyncDevice:
        """Another queue of a multi-queue device, as its own AsyncDevice."""
        return AsyncDevice(await self._call(self._dev.try_clone))

    # ---- lifetime ---------------------------------------------------------------------------
    def _closing(self) -> None:
        if self._closed:
            return
        self._closed = True
        trio = sys.modules.get("trio")
        if trio is not None:
            try:
                trio.lowlevel.notify_closing(self._fd)
            except RuntimeError:
                pass  # not inside trio
        for waiters, write in ((self._read_waiters, False), (self._write_waiters, True)):
            for fut in waiters:
                loop = fut.get_loop()
                (loop.remove_writer if write else loop.remove_reader)(self._fd)
                if not fut.done():
                    fut.set_exception(DeviceClosedError("the device was closed while a task waited on it"))
            waiters.clear()

    def close(self) -> None:
        """Close the device; tasks waiting on it fail with DeviceClosedError."""
        self._closing()
        self._dev.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AsyncDevice {self._dev!r}>"


class Framed:
    """Packet-level I/O over an AsyncDevice: an async iterator of packets and a batching writer.

    Reading yields IP packets (frames for TAP), split from super-packets when offload is on.
    Writing collects up to batch_size packets and writes them coalesced on flush(), when the
    batch is full, and on aclose(); writes wait while the device is not writable.
    """

    def __init__(self, device: AsyncDevice, batch_size: int = IDEAL_BATCH_SIZE) -> None:
        if not 1 <= batch_size <= 65535:
            raise ValueError(f"batch_size: {batch_size} is outside 1..65535")
        self.device = device
        self.batch_size = batch_size
        self._batch: list[Bytes] = []
        self._table = GROTable()
        self._closed = False

    # read half
    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except DeviceClosedError:
            raise StopAsyncIteration from None

    async def recv(self) -> bytes:
        """The next packet."""
        return (await self.device._fill_rx()).pending.popleft()

    # write half
    @property
    def pending(self) -> int:
        """Packets waiting in the current batch."""
        return len(self._batch)

    async def send(self, packet: Bytes) -> None:
        """Queue one packet; a full batch is flushed before this returns."""
        if self._closed:
            raise DeviceClosedError("send() on a closed Framed writer")
        self._batch.append(packet)
        if len(self._batch) >= self.batch_size:
            await self.flush()

    async def flush(self) -> int:
        """Coalesce and write the batch; returns the bytes written."""
        if not self._batch:
            return 0
        batch, self._batch = self._batch, []
        dev = self.device
        frames = frames_to_send(
            batch, 0, vnet=dev._dev.backend.vnet_hdr, layer=dev.layer, udp_gro=dev.udp_gso, table=self._table
        )
        return await dev._write_frames(frames)

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
