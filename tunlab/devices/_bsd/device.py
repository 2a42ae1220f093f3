"""What a macOS or BSD device shares once it exists: configuration through ioctls and PF_ROUTE
(tunlab/devices/_bsd/ifconfig.py), the 4-byte address-family header of tun/utun frames kept
out of the caller's way, blocking mode and readiness on the device fd."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import ClassVar

from tunlab.devices._backend import (
    Bytes,
    Configurator,
    DeviceBackend,
    FrameFormat,
    IPAddress,
    IPInterface,
    WritableBuffer,
    require,
    unsupported,
)
from tunlab.devices._bsd.abi import Abi
from tunlab.devices._bsd.ifconfig import Interface
from tunlab.devices._bsd.system import System
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import LinkSettings, parse_mac
from tunlab.devices._layer import Layer
from tunlab.devices._readiness import PollTarget, Readiness
from tunlab.errors import DeviceClosedError, DeviceError

AF_HEADER = 4


# what every macOS/BSD interface offers: configured through one socket's ioctls, read through an fd
FAMILY_CAPABILITIES = frozenset(
    {
        Capability.ADDRESSES,
        Capability.MTU,
        Capability.ENABLE,
        Capability.IF_INDEX,
        Capability.FD,
        Capability.BROADCAST,
    }
)


class BsdFamilyDevice(DeviceBackend):
    """A device with an fd whose interface is configured by name (subclasses do the I/O; the
    per-OS hooks set_mac, rename and configured are theirs to override)."""

    abi: ClassVar[Abi]

    def __init__(
        self,
        sys: System,
        layer: Layer,
        name: str,
        *,
        fd: int,
        owned: bool,
        point_to_point: bool,
        capabilities: frozenset[Capability],
    ) -> None:
        super().__init__(layer, owned=owned, capabilities=capabilities)
        self.sys = sys
        self._fd = fd
        self._name = name
        self.iface = Interface(sys, self.abi, name, point_to_point)
        self.config: BsdConfig = BsdConfig(self)

    @classmethod
    def system(cls) -> System:
        """The OS calls this backend makes (a test double replaces it)."""
        return System(cls.abi)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _check(self) -> int:
        if self._fd < 0:
            raise DeviceClosedError()
        return self._fd

    # ---- per-OS hooks -------------------------------------------------------------------------
    def set_mac(self, mac: str) -> None:
        """SIOCSIFLLADDR (NetBSD has its own way)."""
        self.iface.set_mac(bytes.fromhex(parse_mac(mac).replace(":", "")))

    def rename(self, name: str) -> None:
        """Give the interface another name (only where the OS can)."""
        unsupported(self, "set_name", Capability.SET_NAME)

    def configured(self, settings: LinkSettings) -> None:
        """After settings were applied: what this OS still needs (a DAD wait, a feth peer's MTU)."""

    # ---- fd -----------------------------------------------------------------------------------
    def fileno(self) -> int:
        return self._check()

    def readiness(self) -> Readiness:
        fd = self._check()
        return Readiness(PollTarget(fd), PollTarget(fd, writable=True))

    def _set_blocking_mode(self, nonblocking: bool) -> None:
        self.sys.set_blocking(self._check(), not nonblocking)


class BsdConfig(Configurator):
    """A macOS/BSD interface configured by name through one socket's ioctls and PF_ROUTE."""

    def __init__(self, device: BsdFamilyDevice) -> None:
        super().__init__(device)
        self.dev = device

    def configure(self, settings: LinkSettings) -> None:
        """MTU, MAC, up, addresses, down — in that order, as on Linux."""
        dev = self.dev
        dev._check()
        if settings.mac is not None:
            if dev.layer is not Layer.L2:
                self._no("set_mac_address", Capability.MAC)
            dev.set_mac(settings.mac)
        if settings.mtu is not None:
            dev.iface.set_mtu(settings.mtu)
        if settings.tx_queue_len is not None:
            self._no("tx_queue_len", Capability.TX_QUEUE_LEN)
        if settings.enabled:
            dev.iface.set_up(True)
        for v4 in settings.ipv4:
            dev.iface.add_ipv4(v4.interface, v4.destination)
        for v6 in settings.ipv6:
            dev.iface.add_ipv6(v6)
        if settings.enabled is False:
            dev.iface.set_up(False)
        dev.configured(settings)

    def name(self) -> str:
        self.dev._check()
        return self.dev._name

    def set_name(self, name: str) -> None:
        self.dev._check()
        self.dev.rename(name)

    def if_index(self) -> int:
        self.dev._check()
        try:
            return self.dev.sys.if_nametoindex(self.dev._name)
        except OSError:
            raise DeviceError(f"interface {self.dev._name} is gone") from None

    def mtu(self) -> int:
        self.dev._check()
        return self.dev.iface.mtu()

    def is_running(self) -> bool:
        self.dev._check()
        return self.dev.iface.is_up() and self.dev.iface.is_running()

    def addresses(self) -> list[IPInterface]:
        self.dev._check()
        return self.dev.iface.addresses()

    def remove_address(self, address: IPAddress) -> None:
        self.dev._check()
        self.dev.iface.remove_address(address)

    def mac_address(self) -> str:
        self.dev._check()
        require(self.dev, "mac_address", Capability.MAC)
        mac = self.dev.iface.mac()
        if mac is None:
            raise DeviceError(f"{self.dev._name} has no link-layer address")
        return mac

    def broadcast(self) -> ipaddress.IPv4Address | None:
        """The first IPv4 address's broadcast (or, point-to-point, destination) address."""
        self.dev._check()
        return self.dev.iface.broadcast()

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        """Re-add the IPv4 address whose subnet holds address, with it as broadcast/destination."""
        self.dev._check()
        for iface in self.addresses():
            if isinstance(iface, ipaddress.IPv4Interface) and address in iface.network:
                self.dev.iface.remove_address(iface.ip)
                self.dev.iface.add_ipv4(iface, address)
                return
        raise ValueError(
            f"broadcast: {address} is in no IPv4 subnet of {self.dev._name}: add the address first"
        )


class AfHeaderFrames:
    """tun/utun frames start with the packet's address family (uint32, network order): kept out of
    the caller's buffers unless packet_information was asked for, as Linux's IFF_NO_PI does."""

    def __init__(self, sys: System, abi: Abi, keep: bool) -> None:
        self.sys = sys
        self.abi = abi
        self.keep = keep
        self._hdr = bytearray(AF_HEADER)
        self._v4 = struct.pack("!I", socket.AF_INET)
        self._v6 = struct.pack("!I", abi.af_inet6)

    @property
    def frame_format(self) -> FrameFormat:
        if self.keep:
            return FrameFormat(prefix=AF_HEADER, packet_information=True)
        return FrameFormat()

    def recv_into(self, fd: int, buffer: WritableBuffer) -> int:
        if self.keep:
            return self.sys.read_into(fd, buffer)
        n = self.sys.readv(fd, [self._hdr, buffer])
        return max(0, n - AF_HEADER)

    def send(self, fd: int, data: Bytes) -> int:
        if self.keep:
            return self.sys.write(fd, data)
        if not data:
            raise ValueError("an empty packet")
        version = data[0] >> 4
        if version not in (4, 6):
            raise ValueError(f"not an IP packet (version {version}): a TUN device carries IPv4 or IPv6")
        n = self.sys.writev(fd, [self._v4 if version == 4 else self._v6, data])
        return max(0, n - AF_HEADER)

    def recv_vectored(self, fd: int, buffers: Sequence[WritableBuffer]) -> int:
        if self.keep:
            return self.sys.readv(fd, list(buffers))
        return max(0, self.sys.readv(fd, [self._hdr, *buffers]) - AF_HEADER)

    def send_vectored(self, fd: int, buffers: Sequence[Bytes]) -> int:
        if self.keep:
            return self.sys.writev(fd, list(buffers))
        first = next((bytes(b[:1]) for b in buffers if len(b)), b"")
        if not first or first[0] >> 4 not in (4, 6):
            raise ValueError("not an IP packet: a TUN device carries IPv4 or IPv6")
        word = self._v4 if first[0] >> 4 == 4 else self._v6
        return max(0, self.sys.writev(fd, [word, *buffers]) - AF_HEADER)
