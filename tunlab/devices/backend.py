"""The one interface every platform backend implements: frame I/O, readiness, configuration.

Everything above the backend (SyncDevice, AsyncDevice, Framed, the relay and its worker
processes) moves frames only through these methods, so the same code runs over Linux's bare
fd, utun's address-family header, a Wintun ring or the in-memory test backend. Platform
framing is the backend's business: callers see the frames its `frame_format` describes.
What a device cannot do raises UnsupportedOperationError naming the capability.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, NoReturn

from tunlab.devices.capabilities import HINTS, Capability
from tunlab.devices.layer import Layer
from tunlab.errors import DeviceClosedError, UnsupportedOperationError

if TYPE_CHECKING:
    from tunlab.devices.config import DeviceConfig, LinkSettings
    from tunlab.devices.readiness import Readiness

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Bytes = bytes | bytearray | memoryview
WritableBuffer = bytearray | memoryview
MAX_IP_PACKET = 65535
ETHERNET_HEADER = 14


@dataclass(frozen=True)
class FrameFormat:
    """What each frame a caller reads or writes looks like, beyond the packet itself.

    prefix: bytes in front of the packet (Linux: 4 of packet information and/or the 10-byte
    virtio-net header). virtio: frames carry a virtio-net header, so super-packets (TCP when
    tcp_gso, UDP when udp_gso) may cross, and recv_multiple/send_multiple split and coalesce.
    """

    prefix: int = 0
    virtio: bool = False
    tcp_gso: bool = False
    udp_gso: bool = False


PLAIN = FrameFormat()


@dataclass
class BatchResult:
    """What a batch write did: frames consumed (written or refused), bytes written, refusals.

    frames < len(batch) means the device stopped accepting (would block): the rest is unsent.
    """

    frames: int = 0
    bytes: int = 0
    errors: list[OSError] = field(default_factory=list)


class FrameTooLarge(Exception):
    """recv_batch met a frame larger than the caller's room; it is here whole, nothing lost.

    delivered: frames read into the caller's buffers before it (their sizes are filled in).
    """

    def __init__(self, frame: bytes, delivered: int = 0) -> None:
        super().__init__(f"a {len(frame)}-byte frame does not fit")
        self.frame = frame
        self.delivered = delivered


@dataclass(frozen=True)
class Handoff:
    """How to rebuild a device's frame I/O in another process: fds to pass and a plain spec."""

    fds: tuple[int, ...]
    spec: dict[str, str | int | bool]


class DeviceBackend(abc.ABC):
    """A platform's device: moves frames, says when it is ready, configures its interface."""

    platform: ClassVar[str] = "unknown"

    def __init__(self, layer: Layer, *, owned: bool = True, capabilities: frozenset[Capability]) -> None:
        self.layer = layer
        self.owned = owned
        self.capabilities = capabilities
        self.frame_format: FrameFormat = PLAIN

    @classmethod
    @abc.abstractmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        """What a device of this layer made by this backend can do (checked before creating)."""

    @classmethod
    @abc.abstractmethod
    def create(cls, config: DeviceConfig) -> DeviceBackend:
        """Create the device and apply config.link_settings() once; roll back on failure."""

    # ---- helpers ----------------------------------------------------------------------------
    def unsupported(self, operation: str, capability: Capability | None = None) -> NoReturn:
        hint = HINTS.get(capability) if capability else None
        what = f" (capability '{capability.value}'{': ' + hint if hint else ''})" if capability else ""
        raise UnsupportedOperationError(
            f"{operation} is not supported for {self.layer.kind.upper()} devices on {self.platform}{what}"
        )

    def require(self, operation: str, capability: Capability) -> None:
        if capability not in self.capabilities:
            self.unsupported(operation, capability)

    @property
    def max_frame_size(self) -> int:
        """Largest frame a read can return: prefix + a 64 KiB packet (+ Ethernet header for TAP)."""
        return self.frame_format.prefix + MAX_IP_PACKET + (ETHERNET_HEADER if self.layer is Layer.L2 else 0)

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    def check_open(self) -> None:
        if self.closed:
            raise DeviceClosedError()

    # ---- frame I/O --------------------------------------------------------------------------
    @abc.abstractmethod
    def recv_into(self, buffer: WritableBuffer) -> int:
        """Read one frame into buffer; its length. BlockingIOError when nonblocking and none."""

    @abc.abstractmethod
    def send(self, data: Bytes) -> int:
        """Write one frame; the bytes written."""

    def recv(self, bufsize: int) -> bytes:
        """Read one frame as bytes (at most bufsize)."""
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        del buf[n:]
        return bytes(buf)

    def raw_fd(self) -> int | None:
        """An fd whose reads and writes are exactly this device's frames, or None (framing, no fd).

        The compiled relay pump moves frames between two such fds without the interpreter.
        """
        return None

    def frame_reader(self) -> Callable[[int], bytes]:
        """recv as the cheapest callable there is (a relay's hot loop calls it per frame)."""
        return self.recv

    def frame_writer(self) -> Callable[[Bytes], int]:
        """send as the cheapest callable there is."""
        return self.send

    def recv_batch(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Read frames into bufs[i][offset:] (lengths in sizes[i]); how many were read.

        At least one (waiting when blocking; BlockingIOError when nonblocking and none), more
        while more are queued and the device is nonblocking. A frame longer than its room
        raises FrameTooLarge carrying it whole, and how many frames came before it.
        """
        room = len(bufs[0]) - offset
        frame = self.recv(self.max_frame_size)
        if len(frame) > room:
            raise FrameTooLarge(frame)
        bufs[0][offset : offset + len(frame)] = frame
        sizes[0] = len(frame)
        return 1

    def send_batch(self, frames: Sequence[Bytes], offset: int = 0) -> BatchResult:
        """Write each frames[i][offset:]; stops early (frames < len) when the device is full."""
        result = BatchResult()
        for frame in frames:
            view = memoryview(frame)[offset:] if offset else frame
            try:
                result.bytes += self.send(view)
            except BlockingIOError:
                return result
            except DeviceClosedError:
                raise
            except OSError as exc:
                result.errors.append(exc)
            result.frames += 1
        return result

    def recv_vectored(self, buffers: Sequence[WritableBuffer]) -> int:
        self.unsupported("recv_vectored", Capability.VECTORED)

    def send_vectored(self, buffers: Sequence[Bytes]) -> int:
        self.unsupported("send_vectored", Capability.VECTORED)

    @abc.abstractmethod
    def readiness(self) -> Readiness:
        """What readers and writers of this device wait on."""

    @abc.abstractmethod
    def set_nonblocking(self, nonblocking: bool) -> None: ...

    @abc.abstractmethod
    def is_nonblocking(self) -> bool: ...

    def fileno(self) -> int:
        self.unsupported("fileno", Capability.FD)

    def handoff(self) -> Handoff:
        """What a worker process needs to move this device's frames (see platform.from_handoff)."""
        self.unsupported("handing the device to a worker process", Capability.HANDOFF)

    # ---- interface configuration ------------------------------------------------------------
    def configure(self, settings: LinkSettings) -> None:
        """Apply settings in one step: the build and every later setter share this code."""
        self.unsupported("configure")

    @abc.abstractmethod
    def name(self) -> str: ...

    def set_name(self, name: str) -> None:
        self.unsupported("set_name", Capability.SET_NAME)

    def if_index(self) -> int:
        self.unsupported("if_index", Capability.IF_INDEX)

    def mtu(self) -> int:
        self.unsupported("mtu", Capability.MTU)

    def addresses(self) -> list[IPInterface]:
        self.unsupported("addresses", Capability.ADDRESSES)

    def remove_address(self, address: IPAddress) -> None:
        self.unsupported("remove_address", Capability.ADDRESSES)

    def is_running(self) -> bool:
        self.unsupported("is_running", Capability.ENABLE)

    def mac_address(self) -> str:
        self.unsupported("mac_address", Capability.MAC)

    def broadcast(self) -> ipaddress.IPv4Address | None:
        self.unsupported("broadcast", Capability.BROADCAST)

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        self.unsupported("set_broadcast", Capability.BROADCAST)

    def tx_queue_len(self) -> int:
        self.unsupported("tx_queue_len", Capability.TX_QUEUE_LEN)

    def set_persist(self, persist: bool) -> None:
        self.unsupported("persist", Capability.PERSIST)

    def is_persistent(self) -> bool:
        return False

    @property
    def packet_information(self) -> bool:
        """The platform's per-frame header (Linux PI, utun's address family) is kept for callers."""
        return False

    @property
    def multi_queue(self) -> bool:
        return False

    def set_owner(self, uid: int) -> None:
        self.unsupported("owner", Capability.OWNER)

    def set_group(self, gid: int) -> None:
        self.unsupported("group", Capability.OWNER)

    def try_clone(self) -> DeviceBackend:
        self.unsupported("try_clone", Capability.MULTI_QUEUE)

    def attach_queue(self, attach: bool) -> None:
        self.unsupported("attach_queue", Capability.MULTI_QUEUE)

    # ---- lifetime ---------------------------------------------------------------------------
    def destroy_on_failure(self) -> None:
        """Remove a half-configured device this backend created (called during build rollback)."""
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    def detach(self) -> int:
        """Give up the fd without closing it (into_fd); the backend is closed afterwards."""
        self.unsupported("into_fd", Capability.FD)
