"""SyncDevice: the blocking device API, the same on every platform."""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Callable, MutableSequence, Sequence
from typing import TYPE_CHECKING

from tunlab.devices import _frames as frames
from tunlab.devices._backend import (
    DeviceBackend,
    IPAddress,
    IPInterface,
    VectoredIO,
    max_frame_size,
    require,
    unsupported,
)
from tunlab.devices._batch import Receiver, batch_frames, check_batch_args, send_arena
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import (
    IPv4Setting,
    LinkSettings,
    check_bool,
    check_mtu,
    check_name,
    check_uint,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
    parse_prefix_v4,
    parse_prefix_v6,
)
from tunlab.devices._interrupt import InterruptEvent
from tunlab.devices._layer import Layer
from tunlab.devices._packet_batch import PacketBatch
from tunlab.devices._platform import backend_from_fd
from tunlab.devices._readiness import Readiness, Ready
from tunlab.devices.offload import GROTable
from tunlab.errors import DeviceClosedError, SendMultipleError

if TYPE_CHECKING:
    from typing_extensions import Self

    from tunlab._linux.netns import NetNamespace


def _ipv4_setting(
    operation: str,
    address: str | ipaddress.IPv4Address,
    prefix: int | str,
    destination: str | ipaddress.IPv4Address | None,
    prefix_option: str = "prefix",
) -> IPv4Setting:
    """Validated address/prefix and point-to-point peer; errors name the operation's argument."""
    ip = parse_ipv4(address, f"{operation} address")
    plen = parse_prefix_v4(prefix, f"{operation} {prefix_option}")
    dest = None if destination is None else parse_ipv4(destination, f"{operation} destination")
    return IPv4Setting(ipaddress.IPv4Interface(f"{ip}/{plen}"), dest)


def _writable(buffer: object, operation: str) -> None:
    try:
        view = memoryview(buffer)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{operation}: expected a bytearray or memoryview, got {type(buffer).__name__}"
        ) from None
    if view.readonly:
        raise TypeError(f"{operation}: the buffer is read-only ({type(buffer).__name__}): pass a bytearray")


def _fd_arg(fd: object) -> int:
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"fd: expected an int, got {type(fd).__name__}")
    if not 0 <= fd <= 2**31 - 1:
        raise ValueError(f"fd: {fd} is not a file descriptor (0..2147483647)")
    return fd


def _vectored(backend: DeviceBackend, operation: str) -> VectoredIO:
    """The backend as VectoredIO (readv/writev), or UnsupportedOperationError."""
    require(backend, operation, Capability.VECTORED)
    if not isinstance(backend, VectoredIO):
        unsupported(backend, operation, Capability.VECTORED)
    return backend


class SyncDevice:
    """A TUN (L3) or TAP (L2) device with blocking I/O; also a context manager.

    Frames are exactly what the kernel passes: with packet_information the 4-byte PI header is
    in front, with offload the 10-byte virtio-net header is (recv_multiple/send_multiple hide it).
    """

    def __init__(self, backend: DeviceBackend) -> None:
        self._backend = backend
        self._rx = Receiver(backend)

    @property
    def receiver(self) -> Receiver:
        """Where packets split from a super-packet wait to be delivered (shared by the async
        wrappers of this device, so none is lost between the sync and async halves)."""
        return self._rx

    # ---- ownership --------------------------------------------------------------------------
    @classmethod
    def from_fd(cls, fd: int) -> Self:
        """Take ownership of an open TUN/TAP fd (the Android VpnService path); close() closes it."""
        return cls(backend_from_fd(_fd_arg(fd), owned=True))

    def into_fd(self) -> int:
        """Give up the fd: the caller owns it now and this device is closed (not the fd)."""
        require(self._backend, "into_fd", Capability.FD)
        fd = self._backend.close(release=True)
        assert fd is not None
        return fd

    @property
    def backend(self) -> DeviceBackend:
        """The platform backend (for platform-only extras)."""
        return self._backend

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this device can do (a TUN has no MAC; macOS has no multi-queue, ...)."""
        return self._backend.capabilities

    @property
    def platform(self) -> str:
        """The backend's platform: 'linux', 'memory', ..."""
        return self._backend.platform

    @property
    def layer(self) -> Layer:
        """Layer.L3 (TUN) or Layer.L2 (TAP)."""
        return self._backend.layer

    @property
    def closed(self) -> bool:
        """close() was called (or the fd given away with into_fd())."""
        return self._backend.closed

    def fileno(self) -> int:
        """The device fd (for select/poll and event loops; not on Windows)."""
        require(self._backend, "fileno", Capability.FD)
        return self._backend.fileno()

    def readiness(self) -> Readiness:
        """What to wait on until the device is readable or writable (an fd or a handle)."""
        return self._backend.readiness()

    # ---- I/O --------------------------------------------------------------------------------
    @property
    def max_frame_size(self) -> int:
        """Largest frame a read can return (headers included): the safe buffer size."""
        return max_frame_size(self._backend)

    def recv(self, bufsize: int | None = None) -> bytes:
        """Read one frame; bufsize defaults to max_frame_size so nothing is ever truncated.

        With a smaller bufsize a longer frame comes back cut to bufsize bytes (the kernel drops
        the rest); `len(frame) == bufsize` is the sign to look for.
        """
        if bufsize is not None and (isinstance(bufsize, bool) or not isinstance(bufsize, int) or bufsize < 1):
            raise ValueError(f"recv: bufsize must be a positive int, got {bufsize!r}")
        if self._backend.closed:
            raise DeviceClosedError()
        return frames.read(self._backend, bufsize)

    def recv_into(self, buffer: bytearray | memoryview) -> int:
        """Read one frame into a writable buffer; returns its length.

        A buffer shorter than the frame gets its first bytes (the rest is lost, as with a TUN
        read): give max_frame_size bytes, or use recv_multiple, which never truncates.
        """
        _writable(buffer, "recv_into")
        return self._backend.recv_into(buffer)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Write one frame; returns the bytes written."""
        frames.check_frame(self._backend, data)
        return self._backend.send(data)

    def recv_vectored(self, buffers: Sequence[bytearray | memoryview]) -> int:
        """Read one frame scattered over several buffers (readv)."""
        return _vectored(self._backend, "recv_vectored").recv_vectored(buffers)

    def send_vectored(self, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        """Write one frame gathered from several buffers (writev)."""
        return _vectored(self._backend, "send_vectored").send_vectored(buffers)

    # ---- batches (offload) -------------------------------------------------------------------
    def recv_multiple(
        self,
        bufs: Sequence[bytearray | memoryview] | PacketBatch,
        sizes: MutableSequence[int] | None = None,
        offset: int | None = None,
    ) -> int:
        """Read once and deliver the IP packets it holds into `bufs[i][offset:]`, lengths in `sizes`.

        With offload one read brings a super-packet that is split into up to ~45 packets; those
        that do not fit in bufs wait for the next call (nothing is dropped). Without offload it
        moves what one read brings, straight into bufs (more than one packet only when the
        device is nonblocking and more are queued). Returns how many packets were delivered.
        `recv_multiple(batch)` fills a PacketBatch instead (its own sizes and offset): the
        fastest form, nothing allocated per packet.
        """
        offset = check_batch_args(bufs, sizes, offset, vnet=False, send=False)
        return self._rx.receive(bufs, sizes or [], offset)

    def send_multiple(
        self,
        gro_table: GROTable | None,
        bufs: Sequence[bytes | bytearray | memoryview] | PacketBatch,
        offset: int | None = None,
    ) -> int:
        """Write a batch: each `bufs[i][offset:]` is one IP packet (Ethernet frame for TAP).

        With offload the batch is coalesced first (GRO: TCP, and UDP when USO is active), so a
        flow's segments cross the device as one super-packet; offset must leave room for the
        10-byte header (>= VIRTIO_NET_HDR_LEN), as in tun-rs, but the caller's buffers are never
        modified. `send_multiple(table, batch)` writes what a PacketBatch holds. Returns the
        bytes written (headers included). If a write fails the rest are still written and a
        SendMultipleError reports the failures; a full nonblocking device raises BlockingIOError.
        """
        backend = self._backend
        offset = check_batch_args(bufs, None, offset, vnet=backend.frame_format.virtio, send=True)
        sent = send_arena(backend, bufs) if isinstance(bufs, PacketBatch) else None
        if sent is None:
            frames = batch_frames(backend, bufs, offset, gro_table)
            result = backend.send_batch(frames)
            blocked = result.frames < len(frames)
        else:
            result, blocked = sent
        if blocked:
            raise BlockingIOError(11, "the device is full: the rest of the batch was not written")
        if result.errors:
            raise SendMultipleError(result.bytes, result.errors)
        return result.bytes

    def set_nonblocking(self, nonblocking: bool) -> None:
        """Reads and writes raise BlockingIOError instead of waiting (True) or wait (False)."""
        self._backend.nonblocking = check_bool(nonblocking, "nonblocking")

    @property
    def is_nonblocking(self) -> bool:
        """Whether reads and writes raise BlockingIOError instead of waiting."""
        return self._backend.nonblocking

    # ---- interruptible I/O ------------------------------------------------------------------
    def _wait(self, event: InterruptEvent, timeout: float | None, *, write: bool) -> None:
        if not isinstance(event, InterruptEvent):
            raise TypeError(f"event: expected an InterruptEvent, got {type(event).__name__}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout: {timeout} is negative; give seconds >= 0 or None")
        if self._backend.readiness().wait(write=write, timeout=timeout, interrupt=event) is Ready.TIMEOUT:
            raise TimeoutError(f"device not {'writable' if write else 'readable'} within {timeout} s")

    def wait_readable_intr(self, event: InterruptEvent, timeout: float | None = None) -> None:
        """Block until readable; InterruptedError if event fires, TimeoutError after timeout."""
        self._wait(event, timeout, write=False)

    def wait_writable_intr(self, event: InterruptEvent, timeout: float | None = None) -> None:
        """Block until writable; InterruptedError if event fires, TimeoutError after timeout."""
        self._wait(event, timeout, write=True)

    def _when_ready(
        self, op: Callable[[], int], event: InterruptEvent, timeout: float | None, *, write: bool
    ) -> int:
        """Wait (interruptibly), then do op; a reader that lost a race waits again."""
        while True:
            self._wait(event, timeout, write=write)
            try:
                return op()
            except BlockingIOError:
                continue

    def recv_intr(
        self,
        buffer: bytearray | memoryview,
        event: InterruptEvent,
        timeout: float | None = None,
    ) -> int:
        """recv_into that another thread can interrupt; a packet already queued wins.

        With several readers on one fd, call set_nonblocking(True): a reader that loses the race
        for a packet then waits again instead of blocking in read().
        """
        return self._when_ready(lambda: self.recv_into(buffer), event, timeout, write=False)

    def recv_vectored_intr(
        self,
        buffers: Sequence[bytearray | memoryview],
        event: InterruptEvent,
        timeout: float | None = None,
    ) -> int:
        """recv_vectored that another thread can interrupt (see recv_intr)."""
        return self._when_ready(lambda: self.recv_vectored(buffers), event, timeout, write=False)

    def send_intr(
        self,
        data: bytes | bytearray | memoryview,
        event: InterruptEvent,
        timeout: float | None = None,
    ) -> int:
        """send that another thread can interrupt while the device is full."""
        return self._when_ready(lambda: self.send(data), event, timeout, write=True)

    def send_vectored_intr(
        self,
        buffers: Sequence[bytes | bytearray | memoryview],
        event: InterruptEvent,
        timeout: float | None = None,
    ) -> int:
        """send_vectored that another thread can interrupt while the device is full."""
        return self._when_ready(lambda: self.send_vectored(buffers), event, timeout, write=True)

    # ---- interface configuration ------------------------------------------------------------
    @property
    def name(self) -> str:
        """The interface's name now (it follows a rename)."""
        return self._backend.config.name()

    def set_name(self, name: str) -> None:
        """Rename the interface (keeps its up/down state)."""
        require(self._backend, "set_name", Capability.SET_NAME)
        self._backend.config.set_name(check_name(name, "set_name", windows=self.platform == "win32"))

    @property
    def if_index(self) -> int:
        """The OS's interface index."""
        require(self._backend, "if_index", Capability.IF_INDEX)
        return self._backend.config.if_index()

    @property
    def mtu(self) -> int:
        """The interface's MTU."""
        require(self._backend, "mtu", Capability.MTU)
        return self._backend.config.mtu()

    def set_mtu(self, mtu: int) -> None:
        """Set the MTU (68..65535)."""
        require(self._backend, "set_mtu", Capability.MTU)
        self._backend.config.configure(LinkSettings(mtu=check_mtu(mtu, "set_mtu")))

    def addresses(self) -> list[IPInterface]:
        """Every address on the interface, as ipaddress interface objects."""
        require(self._backend, "addresses", Capability.ADDRESSES)
        return self._backend.config.addresses()

    def add_address_v4(
        self,
        address: str | ipaddress.IPv4Address,
        prefix: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        """Add an IPv4 address; prefix is a length or a dotted netmask; destination = P2P peer."""
        require(self._backend, "add_address_v4", Capability.ADDRESSES)
        self._backend.config.configure(
            LinkSettings(ipv4=[_ipv4_setting("add_address_v4", address, prefix, destination)])
        )

    def set_network_address(
        self,
        address: str | ipaddress.IPv4Address,
        mask: int | str = 32,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> None:
        """Replace every IPv4 address with this one (IPv6 addresses stay)."""
        require(self._backend, "set_network_address", Capability.ADDRESSES)
        setting = _ipv4_setting("set_network_address", address, mask, destination, "mask")
        for old in self._backend.config.addresses():
            if old.version == 4:
                self._backend.config.remove_address(old.ip)
        self._backend.config.configure(LinkSettings(ipv4=[setting]))

    def add_address_v6(self, address: str | ipaddress.IPv6Address, prefix: int = 128) -> None:
        """Add an IPv6 address (usable at once: no duplicate address detection)."""
        require(self._backend, "add_address_v6", Capability.ADDRESSES)
        ip = parse_ipv6(address, "add_address_v6 address")
        plen = parse_prefix_v6(prefix, "add_address_v6 prefix")
        self._backend.config.configure(LinkSettings(ipv6=[ipaddress.IPv6Interface(f"{ip}/{plen}")]))

    def remove_address(self, address: str | IPAddress) -> None:
        """Remove one address (IPv4 or IPv6; a prefix after "/" is ignored)."""
        require(self._backend, "remove_address", Capability.ADDRESSES)
        try:
            ip = ipaddress.ip_address(str(address).split("/")[0])
        except ValueError:
            raise ValueError(f"remove_address: {address!r} is not an IP address") from None
        self._backend.config.remove_address(ip)

    def enabled(self, up: bool) -> None:
        """Bring the interface up (True) or down (False)."""
        require(self._backend, "enabled", Capability.ENABLE)
        self._backend.config.configure(LinkSettings(enabled=check_bool(up, "enabled")))

    @property
    def is_running(self) -> bool:
        """Up and running (a TUN has carrier while an fd is attached)."""
        require(self._backend, "is_running", Capability.ENABLE)
        return self._backend.config.is_running()

    @property
    def mac_address(self) -> str:
        """The TAP device's MAC address ("02:00:5e:00:53:01")."""
        require(self._backend, "mac_address", Capability.MAC)
        return self._backend.config.mac_address()

    def set_mac_address(self, mac: str | bytes) -> None:
        """Set the TAP device's MAC ("02:.." or 6 bytes)."""
        require(self._backend, "set_mac_address", Capability.MAC)
        self._backend.config.configure(LinkSettings(mac=parse_mac(mac, "set_mac_address")))

    @property
    def broadcast(self) -> ipaddress.IPv4Address | None:
        """IPv4 broadcast address of the first IPv4 address (None when it has none)."""
        require(self._backend, "broadcast", Capability.BROADCAST)
        return self._backend.config.broadcast()

    def set_broadcast(self, address: str | ipaddress.IPv4Address) -> None:
        """Set the broadcast address of the IPv4 address whose subnet holds it."""
        require(self._backend, "set_broadcast", Capability.BROADCAST)
        self._backend.config.set_broadcast(parse_ipv4(address, "set_broadcast"))

    @property
    def tx_queue_len(self) -> int:
        """The interface's transmit queue length."""
        require(self._backend, "tx_queue_len", Capability.TX_QUEUE_LEN)
        return self._backend.config.tx_queue_len()

    def set_tx_queue_len(self, length: int) -> None:
        """Set the transmit queue length."""
        require(self._backend, "set_tx_queue_len", Capability.TX_QUEUE_LEN)
        self._backend.config.configure(LinkSettings(tx_queue_len=check_uint(length, "set_tx_queue_len")))

    def persist(self, enable: bool = True) -> None:
        """Keep the interface after the last fd closes (TUNSETPERSIST); False undoes it."""
        require(self._backend, "persist", Capability.PERSIST)
        self._backend.config.set_persist(check_bool(enable, "persist"))

    def set_owner(self, uid: int) -> None:
        """User that may attach to the device without CAP_NET_ADMIN (TUNSETOWNER)."""
        require(self._backend, "set_owner", Capability.OWNER)
        self._backend.config.set_owner(check_uint(uid, "set_owner", 2**31 - 1))

    def set_group(self, gid: int) -> None:
        """Group that may attach to the device without CAP_NET_ADMIN (TUNSETGROUP)."""
        require(self._backend, "set_group", Capability.OWNER)
        self._backend.config.set_group(check_uint(gid, "set_group", 2**31 - 1))

    @property
    def is_persistent(self) -> bool:
        """The interface stays after the last fd closes (TUNSETPERSIST)."""
        return self._backend.config.is_persistent()

    @property
    def tcp_gso(self) -> bool:
        """TCP super-packets (TSO/GSO) cross this device: frames carry a virtio-net header."""
        return self._backend.frame_format.tcp_gso

    @property
    def udp_gso(self) -> bool:
        """UDP super-packets (USO) cross this device too."""
        return self._backend.frame_format.udp_gso

    @property
    def packet_information(self) -> bool:
        """Frames keep the platform's per-frame header (Linux PI, the BSD/utun address family)."""
        return self._backend.frame_format.packet_information

    @property
    def multi_queue(self) -> bool:
        """The interface has several queues (try_clone() opens another)."""
        return self._backend.config.multi_queue

    def netns(self) -> NetNamespace:
        """The network namespace the interface lives in now (Linux; close it when done)."""
        require(self._backend, "netns", Capability.NETNS)
        return self._backend.config.netns()

    def try_clone(self) -> Self:
        """Another queue of the same multi-queue interface, as an independent device."""
        require(self._backend, "try_clone", Capability.MULTI_QUEUE)
        return type(self)(self._backend.config.open_queue())

    def attach_queue(self, attach: bool = True) -> None:
        """Attach (True) or detach (False) this queue of a multi-queue device (TUNSETQUEUE)."""
        require(self._backend, "attach_queue", Capability.MULTI_QUEUE)
        self._backend.config.attach_queue(check_bool(attach, "attach"))

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the device; a non-persistent interface disappears with its last queue."""
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None and not backend.closed:
            warnings.warn(
                f"unclosed {type(self).__name__} ({backend.platform} {backend.layer.kind}); closing it",
                ResourceWarning,
                stacklevel=2,
            )
            backend.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<{type(self).__name__} closed>"
        try:
            name = self.name
        except OSError:
            name = "?"
        return f"<{type(self).__name__} {self.platform} {self.layer.kind} {name!r}>"


class BorrowedSyncDevice(SyncDevice):
    """A device over an fd someone else owns: close() forgets the fd but never closes it."""

    @classmethod
    def borrow_raw(cls, fd: int) -> BorrowedSyncDevice:
        """A device over fd, which stays its owner's: close() never closes it."""
        return cls(backend_from_fd(_fd_arg(fd), owned=False))

    @classmethod
    def from_fd(cls, fd: int) -> Self:
        """Refused: a borrowed device never owns its fd (use borrow_raw)."""
        raise TypeError("BorrowedSyncDevice never owns its fd: use BorrowedSyncDevice.borrow_raw")

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None and not backend.closed:
            backend.close()  # forgets the fd, which its owner closes: nothing to warn about
