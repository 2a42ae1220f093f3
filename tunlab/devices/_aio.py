"""AsyncDevice: the device API for asyncio (default, uvloop included) and trio.

Reads and writes go straight to the nonblocking backend; only when it says EAGAIN does the
task wait on the backend's readiness: through the loop's reader/writer callbacks on asyncio
(no thread per read), trio.lowlevel.wait_readable/writable on trio, and a worker thread where
the backend has no fd (a Windows handle) or the loop cannot watch one (the proactor).
Configuration runs in a worker thread so the event loop never blocks on netlink.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import sys
from collections.abc import Callable, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tunlab.devices import _frames as frames
from tunlab.devices._backend import IPAddress, IPInterface
from tunlab.devices._batch import Receiver, batch_frames, check_batch_args
from tunlab.devices._interrupt import InterruptEvent
from tunlab.devices._layer import Layer
from tunlab.devices._packet_batch import PacketBatch
from tunlab.devices._readiness import PollTarget, Ready
from tunlab.devices._sync import SyncDevice
from tunlab.devices.offload import IDEAL_BATCH_SIZE, GROTable
from tunlab.errors import DeviceClosedError, SendMultipleError

if TYPE_CHECKING:
    from typing_extensions import Self

    from tunlab._linux.netns import NetNamespace
    from tunlab.devices._framed import Framed

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
    """A TUN/TAP device for async code; wraps a SyncDevice (which becomes nonblocking)."""

    def __init__(self, device: SyncDevice) -> None:
        if not isinstance(device, SyncDevice):
            raise TypeError(f"AsyncDevice wraps a SyncDevice, got {type(device).__name__}")
        device.set_nonblocking(True)
        self._dev = device
        self._backend = device.backend
        self._readiness = device.readiness()
        self._rx: Receiver = device.receiver  # packets split but not yet delivered carry over
        self._read_waiters: list[asyncio.Future[None]] = []
        self._write_waiters: list[asyncio.Future[None]] = []
        self._watched: dict[bool, tuple[asyncio.AbstractEventLoop, PollTarget]] = {}
        self._trio_events: dict[bool, Any] = {}
        self._wake_threads: InterruptEvent | None = None  # wakes thread waits on close
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
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError()

    async def _wait(self, write: bool) -> None:
        self._check_open()
        target = self._readiness.target(write)
        if _runtime() == "trio":
            if target is not None:
                await self._wait_trio(target, write)
            elif self._readiness.wait_handles() is not None:
                await self._wait_trio_handles(write)
            else:
                await self._wait_thread(write)
            return
        loop = asyncio.get_running_loop()
        if target is None or not self._watch(loop, target, write):
            await self._wait_thread(write)
            return
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._write_waiters if write else self._read_waiters
        waiters.append(fut)
        try:
            await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)
                if not waiters and not self._closed:
                    self._unwatch(write)

    def _watch(self, loop: asyncio.AbstractEventLoop, target: PollTarget, write: bool) -> bool:
        """One loop callback per direction, shared by every waiting task; False if the loop can't."""
        if write in self._watched:
            return True
        try:
            if target.writable:
                loop.add_writer(target.fd, self._wake, write)
            else:
                loop.add_reader(target.fd, self._wake, write)
        except NotImplementedError:  # the proactor loop (Windows) watches no fds
            return False
        self._watched[write] = (loop, target)
        return True

    def _unwatch(self, write: bool) -> None:
        entry = self._watched.pop(write, None)
        if entry is not None:
            loop, target = entry
            (loop.remove_writer if target.writable else loop.remove_reader)(target.fd)

    async def _wait_thread(self, write: bool) -> None:
        """Wait in a worker thread (no fd to watch); close() wakes it through an InterruptEvent."""
        if self._wake_threads is None:
            self._wake_threads = InterruptEvent()
        event = self._wake_threads
        while True:
            try:
                done = await run_in_thread(
                    functools.partial(self._readiness.wait, write=write, timeout=0.5, interrupt=event)
                )
            except InterruptedError:
                raise DeviceClosedError("the device was closed while a task waited on it") from None
            self._check_open()
            if done is Ready.READY:
                return

    async def _wait_trio_handles(self, write: bool) -> None:
        """Windows under trio: trio.lowlevel.WaitForSingleObject on the read and close events
        (whichever comes first), then look again."""
        import trio

        readiness = self._readiness
        if write:
            return  # writes never wait on these devices (a full ring is reported by send)
        wait_for = getattr(trio.lowlevel, "WaitForSingleObject")  # noqa: B009 (Windows only)
        while True:
            self._check_open()
            if readiness.ready_now():
                return
            handles = readiness.wait_handles() or ()
            with readiness.holding():
                async with trio.open_nursery() as nursery:

                    async def first(handle: int) -> None:
                        await wait_for(handle)
                        nursery.cancel_scope.cancel()

                    for handle in handles:
                        nursery.start_soon(first, handle)

    async def _wait_trio(self, target: PollTarget, write: bool) -> None:
        """trio lets one task wait per fd and direction: the others wait on its Event."""
        import trio

        current = self._trio_events.get(write)
        if current is not None:
            await current.wait()  # may wake spuriously: callers retry their read/write
            self._check_open()
            return
        event = self._trio_events[write] = trio.Event()
        try:
            if target.writable:
                await trio.lowlevel.wait_writable(target.fd)
            else:
                await trio.lowlevel.wait_readable(target.fd)
        except trio.ClosedResourceError:
            raise DeviceClosedError("the device was closed while a task waited on it") from None
        finally:
            del self._trio_events[write]
            event.set()
        self._check_open()

    def _wake(self, write: bool) -> None:
        waiters = self._write_waiters if write else self._read_waiters
        self._unwatch(write)
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
        self._check_open()
        return frames.read(self._backend, bufsize)

    def try_recv_into(self, buffer: bytearray | memoryview) -> int:
        """One frame into buffer if one is queued (its length), else BlockingIOError."""
        self._check_open()
        return self._backend.recv_into(buffer)

    def try_send(self, data: Bytes) -> int:
        """Write one frame if the device accepts it now, else BlockingIOError."""
        self._check_open()
        frames.check_frame(self._backend, data)
        return self._backend.send(data)

    async def recv(self, bufsize: int | None = None) -> bytes:
        """Read one frame (never truncated with the default size)."""
        while True:
            try:
                return self.try_recv(bufsize)
            except BlockingIOError:
                await self._wait(False)

    async def recv_into(self, buffer: bytearray | memoryview) -> int:
        """Read one frame into a writable buffer, waiting until one comes; its length."""
        while True:
            try:
                return self.try_recv_into(buffer)
            except BlockingIOError:
                await self._wait(False)

    async def send(self, data: Bytes) -> int:
        """Write one frame, waiting while the device is full; the bytes written."""
        while True:
            try:
                return self.try_send(data)
            except BlockingIOError:
                await self._wait(True)

    async def recv_multiple(
        self,
        bufs: Sequence[bytearray | memoryview] | PacketBatch,
        sizes: MutableSequence[int] | None = None,
        offset: int | None = None,
    ) -> int:
        """SyncDevice.recv_multiple without blocking: segments that do not fit wait, unlost."""
        offset = check_batch_args(bufs, sizes, offset, vnet=False, send=False)
        while True:
            self._check_open()
            try:
                return self._rx.receive(bufs, sizes or [], offset)
            except BlockingIOError:
                await self._wait(False)

    async def next_packet(self) -> bytes:
        """One packet (a frame for TAP), split from a super-packet when offload is on."""
        while True:
            self._check_open()
            try:
                return self._rx.next_packet()
            except BlockingIOError:
                await self._wait(False)

    async def send_multiple(
        self, gro_table: GROTable | None, bufs: Sequence[Bytes] | PacketBatch, offset: int | None = None
    ) -> int:
        """SyncDevice.send_multiple, waiting (not blocking) when the device is full."""
        offset = check_batch_args(bufs, None, offset, vnet=self._backend.frame_format.virtio, send=True)
        return await self.write_frames(batch_frames(self._backend, bufs, offset, gro_table))

    async def write_frames(self, frames: Sequence[Bytes]) -> int:
        """Write frames exactly as the device takes them (headers included, nothing coalesced),
        waiting while it is full; the bytes written. Framed's writer and send_multiple use it."""
        written = 0
        errors: list[OSError] = []
        rest = list(frames)
        while rest:
            self._check_open()
            result = self._backend.send_batch(rest)
            written += result.bytes
            errors += result.errors
            rest = rest[result.frames :]
            if rest:
                await self._wait(True)
        if errors:
            raise SendMultipleError(written, errors)
        return written

    # ---- framed I/O -------------------------------------------------------------------------
    def framed(self, batch_size: int = IDEAL_BATCH_SIZE) -> Framed:
        """Both halves: `async for packet in framed`, and `await framed.send(packet)`."""
        from tunlab.devices._framed import Framed

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
        """Layer.L3 (TUN) or Layer.L2 (TAP)."""
        return self._dev.layer

    @property
    def tcp_gso(self) -> bool:
        """TCP super-packets cross this device (frames carry a virtio-net header)."""
        return self._dev.tcp_gso

    @property
    def udp_gso(self) -> bool:
        """UDP super-packets (USO) cross this device too."""
        return self._dev.udp_gso

    @property
    def max_frame_size(self) -> int:
        """Largest frame a read can return (headers included): the safe buffer size."""
        return self._dev.max_frame_size

    def fileno(self) -> int:
        """The device fd (for event loops; not on Windows)."""
        self._check_open()
        return self._dev.fileno()

    async def set_name(self, name: str) -> None:
        """Rename the interface (keeps its up/down state), in a worker thread."""
        await self._call(self._dev.set_name, name)

    async def if_index(self) -> int:
        """The OS's interface index."""
        return await self._call(lambda: self._dev.if_index)

    async def mtu(self) -> int:
        """The interface's MTU."""
        return await self._call(lambda: self._dev.mtu)

    async def set_mtu(self, mtu: int) -> None:
        """Set the MTU (68..65535)."""
        await self._call(self._dev.set_mtu, mtu)

    async def addresses(self) -> list[IPInterface]:
        """Every address on the interface, as ipaddress interface objects."""
        return await self._call(self._dev.addresses)

    async def add_address_v4(
        self,
        address: str | ipaddress.IPv4Address,
        prefix: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        """Add an IPv4 address; prefix is a length or a dotted netmask; destination = P2P peer."""
        await self._call(self._dev.add_address_v4, address, prefix, destination)

    async def add_address_v6(self, address: str | ipaddress.IPv6Address, prefix: int = 128) -> None:
        """Add an IPv6 address (usable at once: no duplicate address detection)."""
        await self._call(self._dev.add_address_v6, address, prefix)

    async def remove_address(self, address: str | IPAddress) -> None:
        """Remove one address (IPv4 or IPv6)."""
        await self._call(self._dev.remove_address, address)

    async def set_network_address(
        self,
        address: str | ipaddress.IPv4Address,
        mask: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        """Replace every IPv4 address with this one (IPv6 addresses stay)."""
        await self._call(self._dev.set_network_address, address, mask, destination)

    async def enabled(self, up: bool) -> None:
        """Bring the interface up (True) or down (False)."""
        await self._call(self._dev.enabled, up)

    async def is_running(self) -> bool:
        """Up and running (a TUN has carrier while an fd is attached)."""
        return await self._call(lambda: self._dev.is_running)

    async def mac_address(self) -> str:
        """The TAP device's MAC address ("02:00:5e:00:53:01")."""
        return await self._call(lambda: self._dev.mac_address)

    async def set_mac_address(self, mac: str | bytes) -> None:
        """Set the TAP device's MAC ("02:.." or 6 bytes)."""
        await self._call(self._dev.set_mac_address, mac)

    async def broadcast(self) -> ipaddress.IPv4Address | None:
        """IPv4 broadcast address of the first IPv4 address (None when it has none)."""
        return await self._call(lambda: self._dev.broadcast)

    async def set_broadcast(self, address: str | ipaddress.IPv4Address) -> None:
        """Set the broadcast address of the IPv4 address whose subnet holds it."""
        await self._call(self._dev.set_broadcast, address)

    async def tx_queue_len(self) -> int:
        """The interface's transmit queue length."""
        return await self._call(lambda: self._dev.tx_queue_len)

    async def set_tx_queue_len(self, length: int) -> None:
        """Set the transmit queue length."""
        await self._call(self._dev.set_tx_queue_len, length)

    async def persist(self, enable: bool = True) -> None:
        """Keep the interface after the last fd closes (TUNSETPERSIST); False undoes it."""
        await self._call(self._dev.persist, enable)

    async def set_owner(self, uid: int) -> None:
        """User that may attach to the device without CAP_NET_ADMIN (TUNSETOWNER)."""
        await self._call(self._dev.set_owner, uid)

    async def set_group(self, gid: int) -> None:
        """Group that may attach to the device without CAP_NET_ADMIN (TUNSETGROUP)."""
        await self._call(self._dev.set_group, gid)

    async def netns(self) -> NetNamespace:
        """The network namespace the interface lives in now (Linux; close it when done)."""
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
            for write in (False, True):
                target = self._readiness.target(write)
                if target is None:
                    continue
                try:
                    trio.lowlevel.notify_closing(target.fd)
                except RuntimeError:
                    pass  # not inside trio
        if self._wake_threads is not None:
            self._wake_threads.trigger()
        for waiters, write in ((self._read_waiters, False), (self._write_waiters, True)):
            self._unwatch(write)
            for fut in waiters:
                if not fut.done():
                    fut.get_loop().call_soon_threadsafe(_fail_closed, fut)
            waiters.clear()

    def close(self) -> None:
        """Close the device; tasks waiting on it fail with DeviceClosedError."""
        self._closing()
        self._dev.close()
        if self._wake_threads is not None:
            self._wake_threads.close()

    async def aclose(self) -> None:
        """close(), first letting tasks that wait on OS handles in this loop's thread (trio on
        Windows) wake and leave, so no handle is closed under a wait."""
        readiness = self._readiness
        if readiness.wait_handles() is not None and not self._closed:
            self._closing()
            readiness.begin_close()
            for _ in range(200):
                if not readiness.waiters():
                    break
                if _runtime() == "trio":
                    import trio

                    await trio.sleep(0.01)
                else:
                    await asyncio.sleep(0.01)
        self.close()  # _closing() is done once: close() goes on to the device

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncDevice {self._dev!r}>"


def _fail_closed(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(DeviceClosedError("the device was closed while a task waited on it"))
