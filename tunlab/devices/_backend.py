"""The one interface every platform backend implements: frames, readiness and lifetime, with
the interface's configuration behind a per-OS Configurator.

Everything above the backend (SyncDevice, AsyncDevice, Framed, the relay and its worker
processes) moves frames only through these methods, so the same code runs over Linux's bare
fd, utun's address-family header, a Wintun ring or the in-memory test backend. Platform
framing is the backend's business: callers see the frames its `frame_format` describes.
What a device cannot do raises UnsupportedOperationError naming the capability.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, NoReturn, Protocol, runtime_checkable

from tunlab.devices._capabilities import HINTS, Capability
from tunlab.devices._layer import Layer
from tunlab.errors import DeviceClosedError, UnsupportedOperationError

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace
    from tunlab.devices._config import LinkSettings
    from tunlab.devices._readiness import Readiness

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
    virtio-net header; utun, BSD tun: the 4-byte address family). virtio: frames carry a
    virtio-net header, so super-packets (TCP when tcp_gso, UDP when udp_gso) may cross, and
    recv_multiple/send_multiple split and coalesce. packet_information: the platform's own
    per-frame header is kept for callers. fd_frames: reads and writes of fileno() are exactly
    these frames (the relay's compiled pump moves them between two such fds).
    """

    prefix: int = 0
    virtio: bool = False
    tcp_gso: bool = False
    udp_gso: bool = False
    packet_information: bool = False
    fd_frames: bool = False


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


def handoff_spec(backend: DeviceBackend, **own: str | int | bool) -> dict[str, str | int | bool]:
    """The spec every handoff carries (platform, layer, the GSO kinds of its frames), plus what
    the backend itself needs to rebuild its frame I/O (own)."""
    fmt = backend.frame_format
    return {
        "platform": backend.platform,
        "layer": backend.layer.value,
        "tcp_gso": fmt.tcp_gso,
        "udp_gso": fmt.udp_gso,
        **own,
    }


class Configurator:
    """A device's interface as the OS configures it: name, index, MTU, addresses, MAC, flags,
    persistence, queues. Each platform has its own; what one cannot do raises
    UnsupportedOperationError naming the capability (the base does that for everything)."""

    def __init__(self, device: DeviceBackend) -> None:
        self.device = device

    def _no(self, operation: str, capability: Capability | None = None) -> NoReturn:
        unsupported(self.device, operation, capability)

    def configure(self, settings: LinkSettings) -> None:
        """Apply settings in one step: the build and every later setter share this code."""
        self._no("configure")

    def name(self) -> str:
        self._no("name")

    def set_name(self, name: str) -> None:
        self._no("set_name", Capability.SET_NAME)

    def if_index(self) -> int:
        self._no("if_index", Capability.IF_INDEX)

    def mtu(self) -> int:
        self._no("mtu", Capability.MTU)

    def addresses(self) -> list[IPInterface]:
        self._no("addresses", Capability.ADDRESSES)

    def remove_address(self, address: IPAddress) -> None:
        self._no("remove_address", Capability.ADDRESSES)

    def is_running(self) -> bool:
        self._no("is_running", Capability.ENABLE)

    def mac_address(self) -> str:
        self._no("mac_address", Capability.MAC)

    def broadcast(self) -> ipaddress.IPv4Address | None:
        self._no("broadcast", Capability.BROADCAST)

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        self._no("set_broadcast", Capability.BROADCAST)

    def tx_queue_len(self) -> int:
        self._no("tx_queue_len", Capability.TX_QUEUE_LEN)

    def set_persist(self, persist: bool) -> None:
        self._no("persist", Capability.PERSIST)

    def is_persistent(self) -> bool:
        return False

    def set_owner(self, uid: int) -> None:
        self._no("owner", Capability.OWNER)

    def set_group(self, gid: int) -> None:
        self._no("group", Capability.OWNER)

    @property
    def multi_queue(self) -> bool:
        return False

    def open_queue(self) -> DeviceBackend:
        """Another queue of a multi-queue interface, as a device of its own (try_clone)."""
        self._no("try_clone", Capability.MULTI_QUEUE)

    def attach_queue(self, attach: bool) -> None:
        self._no("attach_queue", Capability.MULTI_QUEUE)

    def netns(self) -> NetNamespace:
        """The network namespace the interface lives in now (the caller closes it)."""
        self._no("netns", Capability.NETNS)


class DeviceBackend(abc.ABC):
    """A platform's device: moves frames, says when it is ready, and ends; its interface's
    configuration is behind `config` (a Configurator). Creation is the platform's business:
    each backend class offers `create(config)` and `capabilities_for(layer)` (see platform.py),
    and optional capabilities are small protocols of their own (VectoredIO)."""

    platform: ClassVar[str] = "unknown"
    # what to do about a missing capability, where this backend knows better than HINTS
    _hints: ClassVar[Mapping[Capability, str]] = {}

    def __init__(
        self, layer: Layer, *, owned: bool = True, capabilities: frozenset[Capability] = frozenset()
    ) -> None:
        self.layer = layer
        self.capabilities = capabilities  # none unless the backend declares them
        self.frame_format: FrameFormat = PLAIN
        self.config: Configurator = Configurator(self)
        self._owned = owned
        self._nonblocking = False

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """close() was called: every other method raises DeviceClosedError."""

    # ---- frame I/O --------------------------------------------------------------------------
    @abc.abstractmethod
    def recv_into(self, buffer: WritableBuffer) -> int:
        """Read one frame into buffer; its length. BlockingIOError when nonblocking and none."""

    @abc.abstractmethod
    def send(self, data: Bytes) -> int:
        """Write one frame; the bytes written."""

    def recv_batch(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Read frames into `bufs[i][offset:]` (lengths in `sizes[i]`); how many were read.

        At least one (waiting when blocking; BlockingIOError when nonblocking and none), more
        while more are queued and the device is nonblocking. A frame longer than its room
        raises FrameTooLarge carrying it whole, and how many frames came before it.
        """
        room = len(bufs[0]) - offset
        frame = bytearray(max_frame_size(self))
        n = self.recv_into(frame)
        if n > room:
            raise FrameTooLarge(bytes(frame[:n]))
        bufs[0][offset : offset + n] = frame[:n]
        sizes[0] = n
        return 1

    def send_batch(self, frames: Sequence[Bytes], offset: int = 0) -> BatchResult:
        """Write each `frames[i][offset:]`; stops early (frames < len) when the device is full."""
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

    # ---- readiness ----------------------------------------------------------------------------
    @abc.abstractmethod
    def readiness(self) -> Readiness:
        """What readers and writers of this device wait on."""

    @property
    def nonblocking(self) -> bool:
        """Reads and writes raise BlockingIOError instead of waiting."""
        if self.closed:
            raise DeviceClosedError()
        return self._nonblocking

    @nonblocking.setter
    def nonblocking(self, value: bool) -> None:
        self._set_blocking_mode(value)
        self._nonblocking = value

    def _set_blocking_mode(self, nonblocking: bool) -> None:
        """Make the OS object (non)blocking; the base keeps only the flag (no OS object)."""
        if self.closed:
            raise DeviceClosedError()

    def fileno(self) -> int:
        """The pollable device fd (for select/poll and event loops)."""
        unsupported(self, "fileno", Capability.FD)

    def handoff(self) -> Handoff:
        """What a worker process needs to move this device's frames (see platform.from_handoff)."""
        unsupported(self, "handing the device to a worker process", Capability.HANDOFF)

    # ---- lifetime ---------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self, *, release: bool = False) -> int | None:
        """End the device; a device over a borrowed fd forgets it without closing it. With
        release the fd is given to the caller instead (into_fd) and returned."""


@runtime_checkable
class VectoredIO(Protocol):
    """A device that reads and writes one frame scattered over several buffers (readv/writev)."""

    def recv_vectored(self, buffers: Sequence[WritableBuffer]) -> int: ...

    def send_vectored(self, buffers: Sequence[Bytes]) -> int: ...


def max_frame_size(device: DeviceBackend) -> int:
    """Largest frame a read can return: prefix + a 64 KiB packet (+ Ethernet header for TAP)."""
    l2 = ETHERNET_HEADER if device.layer is Layer.L2 else 0
    return device.frame_format.prefix + MAX_IP_PACKET + l2


def unsupported(device: DeviceBackend, operation: str, capability: Capability | None = None) -> NoReturn:
    """Raise UnsupportedOperationError: the operation, the device's kind and platform, and the
    capability it lacks (with the hint of what to do)."""
    hint = (device._hints.get(capability) or HINTS.get(capability)) if capability else None
    what = f" (capability '{capability.value}'{': ' + hint if hint else ''})" if capability else ""
    raise UnsupportedOperationError(
        f"{operation} is not supported for {device.layer.kind.upper()} devices on {device.platform}{what}"
    )


def require(device: DeviceBackend, operation: str, capability: Capability) -> None:
    """unsupported() unless the device has the capability."""
    if capability not in device.capabilities:
        unsupported(device, operation, capability)
