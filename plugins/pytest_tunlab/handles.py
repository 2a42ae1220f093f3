"""What the fixtures hand to a test: a device with the kernel side ("peer") next to it."""

from __future__ import annotations

import socket
from typing import Any

from tunlab.devices.aio import AsyncDevice
from tunlab.devices.sync import SyncDevice
from tunlab.linux.netns import NetNamespace
from tunlab.testing.capture import Capture
from tunlab.testing.traffic import PingResult, ping
from tunlab.topologies.drivers.base import NodeHandle


class Peer(NodeHandle):
    """The kernel side of a tun_device: its namespace, where sockets and programs run."""

    def __init__(self, netns: NetNamespace, name: str = "peer") -> None:
        super().__init__(name, "peer", netns)

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
    ) -> socket.socket:
        """A socket in the device's namespace (the kernel end of the device); UDP by default."""
        return self.netns.socket(family, type, proto)

    def ping(self, address: str, *, count: int = 1, timeout: float = 2.0) -> PingResult:
        """ping from the kernel side (through the device for addresses behind it)."""
        return ping(self, address, count=count, timeout=timeout)


class TunDeviceHandle:
    """A device built for one test, the namespace it lives in, and its kernel-side peer."""

    def __init__(
        self, device: SyncDevice | AsyncDevice, netns: NetNamespace, options: dict[str, Any]
    ) -> None:
        self.device = device
        self.netns = netns
        self.peer = Peer(netns)
        self.options = options

    @property
    def name(self) -> str:
        return self.device.name

    def capture(self, path: str | None = None) -> Capture:
        """A capture of the device's interface (use as a context manager)."""
        return Capture(self.netns, self.device.name, path)

    def __repr__(self) -> str:
        return f"<tun_device {self.device!r} in {self.netns!r}>"
