"""MemoryDevice: a TUN/TAP device whose "kernel" is a Wire in this process.

What wireguard-go's tuntest is for Go: the sync, async, batch, framed and relay logic run over
it on any OS, without root. Frames the test injects into the wire are what the device reads;
what the device writes comes out of the wire. With offload the frames carry a virtio-net
header exactly as Linux's do, so split and coalesce are exercised end to end. Readiness is a
pair of sockets kept readable while a frame is waiting (or while there is room to write), so
poll, select, asyncio, uvloop and trio wait on it as on a real device.
"""

from __future__ import annotations

import collections
import itertools
import socket
import threading
import time
from collections.abc import MutableSequence, Sequence
from typing import ClassVar

from tunlab.devices._backend import (
    Bytes,
    Configurator,
    DeviceBackend,
    FrameFormat,
    FrameTooLarge,
    IPAddress,
    IPInterface,
    WritableBuffer,
    unsupported,
)
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig, LinkSettings, format_mac
from tunlab.devices._layer import Layer
from tunlab.devices._readiness import PollTarget, Readiness
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN
from tunlab.errors import DeviceClosedError, DeviceError, InterfaceExistsError

_names = itertools.count()
_taken: set[str] = set()
_taken_lock = threading.Lock()


class _Level:
    """An fd that is readable exactly while a condition holds (a socket pair and one byte)."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._on = False

    def fileno(self) -> int:
        return self._r.fileno()

    def set(self, on: bool) -> None:
        if on and not self._on:
            self._w.send(b"\x01")
        elif not on and self._on:
            self._r.recv(16)
        self._on = on

    def close(self) -> None:
        self._r.close()
        self._w.close()


class Wire:
    """The far side of a MemoryDevice: inject() frames for it to read, take() what it wrote.

    capacity bounds the frames the device may have written and nobody has taken yet: a full
    wire makes send() block (or raise BlockingIOError on a nonblocking device), which is how
    backpressure is tested.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._inbound: collections.deque[bytes] = collections.deque()
        self._outbound: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._readable = _Level()
        self._writable = _Level()
        self._writable.set(True)
        self.closed = False

    # ---- the test's side --------------------------------------------------------------------
    def inject(self, *frames: Bytes) -> None:
        """Frames arriving at the device (what recv() will return, in order)."""
        with self._cond:
            if self.closed:
                raise DeviceClosedError("inject() on a closed device")
            self._inbound.extend(bytes(f) for f in frames)
            self._readable.set(True)
            self._cond.notify_all()

    def take(self, timeout: float | None = 5.0) -> bytes:
        """The next frame the device wrote (TimeoutError when none comes in time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._outbound:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the device wrote nothing within {timeout} s")
                self._cond.wait(left)
            frame = self._outbound.popleft()
            self._writable.set(True)
            self._cond.notify_all()
            return frame

    def take_all(self) -> list[bytes]:
        """Every frame written and not yet taken (without waiting)."""
        with self._cond:
            out = list(self._outbound)
            self._outbound.clear()
            self._writable.set(True)
            self._cond.notify_all()
            return out

    @property
    def waiting(self) -> int:
        """Frames injected that the device has not read yet."""
        return len(self._inbound)

    # ---- the device's side ------------------------------------------------------------------
    def _pop(self, blocking: bool) -> bytes:
        with self._cond:
            while not self._inbound:
                if self.closed:
                    raise DeviceClosedError()
                if not blocking:
                    raise BlockingIOError(11, "no frame waiting")
                self._cond.wait()
            frame = self._inbound.popleft()
            if not self._inbound:
                self._readable.set(False)
            return frame

    def _push(self, frame: bytes, blocking: bool) -> None:
        with self._cond:
            while self.capacity is not None and len(self._outbound) >= self.capacity:
                if self.closed:
                    raise DeviceClosedError()
                if not blocking:
                    raise BlockingIOError(11, "the wire is full")
                self._cond.wait()
            if self.closed:
                raise DeviceClosedError()
            self._outbound.append(frame)
            if self.capacity is not None and len(self._outbound) >= self.capacity:
                self._writable.set(False)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._cond.notify_all()
        self._readable.close()
        self._writable.close()


class MemoryDevice(DeviceBackend):
    """An in-memory TUN/TAP device; `device.backend.wire` is its far side."""

    platform: ClassVar[str] = "memory"

    def __init__(self, layer: Layer, *, name: str, vnet: bool = False, udp_gso: bool = False) -> None:
        super().__init__(layer, owned=True, capabilities=self.capabilities_for(layer))
        self.wire = Wire()
        self._closed = False
        self.config: MemoryConfig = MemoryConfig(self, name)
        if vnet:
            self.frame_format = FrameFormat(VIRTIO_NET_HDR_LEN, True, True, udp_gso)
        self._readiness = Readiness(
            PollTarget(self.wire._readable.fileno()), PollTarget(self.wire._writable.fileno())
        )

    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        caps = {
            Capability.SET_NAME,
            Capability.ADDRESSES,
            Capability.MTU,
            Capability.ENABLE,
            Capability.OFFLOAD,
            Capability.TX_QUEUE_LEN,
        }
        if layer is Layer.L2:
            caps |= {Capability.TAP, Capability.MAC}
        return frozenset(caps)

    @classmethod
    def create(cls, config: DeviceConfig) -> MemoryDevice:
        name = config.name
        with _taken_lock:
            if name is None:
                name = f"mem{next(_names)}"
            if name in _taken:
                raise InterfaceExistsError(f"an in-memory device named '{name}' already exists")
            _taken.add(name)
        dev = cls(config.layer, name=name, vnet=config.linux.offload, udp_gso=config.linux.offload)
        try:
            dev.config.configure(config.link_settings())
        except BaseException:
            dev.close()
            raise
        return dev

    # ---- frame I/O --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise DeviceClosedError()

    def recv_into(self, buffer: WritableBuffer) -> int:
        self._check()
        frame = self.wire._pop(not self._nonblocking)
        n = min(len(frame), len(buffer))  # a short buffer truncates, as a TUN read does
        buffer[:n] = frame[:n]
        return n

    def recv_batch(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Frames straight into bufs (more than one only when nonblocking), as on Linux."""
        self._check()
        blocking = not self._nonblocking
        count = 0
        for buf in bufs:
            try:
                frame = self.wire._pop(blocking and not count)
            except BlockingIOError:
                if count:
                    return count
                raise
            room = len(buf) - offset
            if len(frame) > room:
                raise FrameTooLarge(frame, delivered=count)
            buf[offset : offset + len(frame)] = frame
            sizes[count] = len(frame)
            count += 1
            if blocking:
                break
        return count

    def send(self, data: Bytes) -> int:
        self._check()
        frame = bytes(data)
        if self.frame_format.virtio and len(frame) < VIRTIO_NET_HDR_LEN:
            raise OSError(22, "a frame shorter than the virtio-net header")
        self.wire._push(frame, not self._nonblocking)
        return len(frame)

    def readiness(self) -> Readiness:
        self._check()
        return self._readiness

    def close(self, *, release: bool = False) -> int | None:
        if release:
            unsupported(self, "into_fd", Capability.FD)
        if self._closed:
            return None
        self._closed = True
        self.wire.close()
        with _taken_lock:
            _taken.discard(self.config.current_name)
        return None


class MemoryConfig(Configurator):
    """The in-memory device's interface: a name, MTU, MAC, addresses and a flag for 'up'."""

    def __init__(self, device: MemoryDevice, name: str) -> None:
        super().__init__(device)
        self.dev = device
        self.current_name = name
        self._mtu = 1500
        self._mac = (
            format_mac(bytes((0x02, 0, 0x5E, 0, 0x53, next(_names) & 0xFF)))
            if device.layer is Layer.L2
            else None
        )
        self._addresses: list[IPInterface] = []
        self._up = False
        self._txqlen = 1000

    def configure(self, settings: LinkSettings) -> None:
        self.dev._check()
        if settings.mac is not None and self.dev.layer is not Layer.L2:
            self._no("set_mac_address", Capability.MAC)
        new: list[IPInterface] = [s.interface for s in settings.ipv4] + list(settings.ipv6)
        for iface in new:
            if any(a.ip == iface.ip for a in self._addresses):
                raise DeviceError(f"address {iface} is already on '{self.current_name}'", 17)
        if settings.mtu is not None:
            self._mtu = settings.mtu
        if settings.tx_queue_len is not None:
            self._txqlen = settings.tx_queue_len
        if settings.mac is not None:
            self._mac = settings.mac
        self._addresses.extend(new)
        if settings.enabled is not None:
            self._up = settings.enabled

    def name(self) -> str:
        self.dev._check()
        return self.current_name

    def set_name(self, name: str) -> None:
        self.dev._check()
        with _taken_lock:
            if name in _taken and name != self.current_name:
                raise InterfaceExistsError(f"set_name: an in-memory device named '{name}' already exists")
            _taken.discard(self.current_name)
            _taken.add(name)
        self.current_name = name

    def mtu(self) -> int:
        self.dev._check()
        return self._mtu

    def tx_queue_len(self) -> int:
        self.dev._check()
        return self._txqlen

    def addresses(self) -> list[IPInterface]:
        self.dev._check()
        return list(self._addresses)

    def remove_address(self, address: IPAddress) -> None:
        self.dev._check()
        keep = [a for a in self._addresses if a.ip != address]
        if len(keep) == len(self._addresses):
            raise DeviceError(f"remove_address: {address} is not on '{self.current_name}'", 99)
        self._addresses = keep

    def is_running(self) -> bool:
        self.dev._check()
        return self._up

    def mac_address(self) -> str:
        self.dev._check()
        if self._mac is None:
            self._no("mac_address", Capability.MAC)
        return self._mac
