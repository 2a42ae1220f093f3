"""The one interface every platform backend implements; what a platform lacks raises clearly."""

from __future__ import annotations

import abc
import ipaddress
from typing import ClassVar, NoReturn

from tunlab.devices.capabilities import Capability
from tunlab.devices.layer import Layer
from tunlab.errors import UnsupportedOperationError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeviceBackend(abc.ABC):
    """A platform's device: owns (or borrows) the I/O fd and configures the interface behind it.

    `raw_io` is True when frames on the fd are exactly what callers send and receive (Linux,
    Android): the SyncDevice then calls os.read/os.write directly. Otherwise the backend's
    recv/send add and strip the platform's framing (the 4-byte AF header of utun and BSD tun).
    """

    platform: ClassVar[str] = "unknown"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, fd: int, layer: Layer, *, owned: bool = True) -> None:
        self.fd = fd
        self.layer = layer
        self.owned = owned
        self.raw_io = True
        self.vnet_hdr = False
        self.tcp_gso = False
        self.udp_gso = False
        self.packet_information = False
        self.multi_queue = False

    # ---- helpers ----------------------------------------------------------------------------
    def unsupported(self, operation: str, capability: Capability | None = None) -> NoReturn:
        what = f" ({capability.value})" if capability else ""
        raise UnsupportedOperationError(
            f"{operation} is not supported for {self.layer.kind.upper()} devices on {self.platform}{what}"
        )

    @property
    def header_len(self) -> int:
        """Bytes the platform puts in front of each frame on the fd (PI or virtio-net header)."""
        return (10 if self.vnet_hdr else 0) + (4 if self.packet_information else 0)

    @property
    def max_frame_size(self) -> int:
        """Largest read the fd can return: header + a 64 KiB packet (+ Ethernet header for TAP)."""
        return self.header_len + 65535 + (14 if self.layer is Layer.L2 else 0)

    # ---- I/O for framed backends (raw_io False) ------------------------------------------------
    def recv(self, bufsize: int) -> bytes:
        self.unsupported("recv")

    def recv_into(self, buffer: memoryview) -> int:
        self.unsupported("recv_into")

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self.unsupported("send")

    # ---- interface configuration ------------------------------------------------------------
    @abc.abstractmethod
    def name(self) -> str: ...

    def set_name(self, name: str) -> None:
        self.unsupported("set_name", Capability.SET_NAME)

    @abc.abstractmethod
    def if_index(self) -> int: ...

    def mtu(self) -> int:
        self.unsupported("mtu", Capability.MTU)

    def set_mtu(self, mtu: int) -> None:
        self.unsupported("set_mtu", Capability.MTU)

    def addresses(self) -> list[IPInterface]:
        self.unsupported("addresses", Capability.ADDRESSES)

    def add_address_v4(
        self, interface: ipaddress.IPv4Interface, destination: ipaddress.IPv4Address | None
    ) -> None:
        self.unsupported("add_address_v4", Capability.ADDRESSES)

    def add_address_v6(self, interface: ipaddress.IPv6Interface) -> None:
        self.unsupported("add_address_v6", Capability.ADDRESSES)

    def remove_address(self, address: IPAddress) -> None:
        self.unsupported("remove_address", Capability.ADDRESSES)

    def enabled(self, up: bool) -> None:
        self.unsupported("enabled", Capability.ENABLE)

    def is_running(self) -> bool:
        self.unsupported("is_running", Capability.ENABLE)

    def mac_address(self) -> str:
        self.unsupported("mac_address", Capability.MAC)

    def set_mac_address(self, mac: str) -> None:
        self.unsupported("set_mac_address", Capability.MAC)

    def broadcast(self) -> ipaddress.IPv4Address | None:
        self.unsupported("broadcast", Capability.BROADCAST)

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        self.unsupported("set_broadcast", Capability.BROADCAST)

    def tx_queue_len(self) -> int:
        self.unsupported("tx_queue_len", Capability.TX_QUEUE_LEN)

    def set_tx_queue_len(self, length: int) -> None:
        self.unsupported("set_tx_queue_len", Capability.TX_QUEUE_LEN)

    def set_persist(self, persist: bool) -> None:
        self.unsupported("persist", Capability.PERSIST)

    def is_persistent(self) -> bool:
        return False

    def set_owner(self, uid: int) -> None:
        self.unsupported("owner", Capability.OWNER)

    def set_group(self, gid: int) -> None:
        self.unsupported("group", Capability.OWNER)

    def try_clone(self) -> DeviceBackend:
        self.unsupported("try_clone", Capability.MULTI_QUEUE)

    def attach_queue(self, attach: bool) -> None:
        self.unsupported("attach_queue", Capability.MULTI_QUEUE)

    def set_offload(self, enable: bool) -> None:
        self.unsupported("offload", Capability.OFFLOAD)

    # ---- lifetime ---------------------------------------------------------------------------
    def destroy_on_failure(self) -> None:
        """Remove a half-configured device this backend created (called during build rollback)."""
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    def detach(self) -> int:
        fd, self.fd = self.fd, -1
        return fd
