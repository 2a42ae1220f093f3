"""What the fixtures hand to a test: a device with the kernel side ("peer") next to it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from typing import Any

from tunlab._linux.netns import NetNamespace
from tunlab.devices._aio import AsyncDevice
from tunlab.devices._sync import SyncDevice
from tunlab.testing._capture import Capture
from tunlab.testing._traffic import PingResult, ping
from tunlab.topologies._drivers.base import ExecResult, NodeHandle


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


class HostPeer:
    """The kernel side of a tun_device on macOS and the BSDs: the host's own stack (no
    namespaces there), where sockets and programs run as they are."""

    name = "peer"
    kind = "host"
    netns = None

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv on the host (argv list; no shell)."""
        return subprocess.Popen(list(argv), **kwargs)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run argv to completion; returns (code, stdout, stderr)."""
        done = subprocess.run(
            list(argv), input=input, capture_output=True, timeout=timeout, env=env, check=False
        )
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
    ) -> socket.socket:
        """A socket in the host's stack (the kernel end of the device); UDP by default."""
        return socket.socket(family, type, proto)

    def ping(self, address: str, *, count: int = 1, timeout: float = 2.0) -> PingResult:
        """ping from the host, through the device for addresses behind it."""
        return ping(self, address, count=count, timeout=timeout)

    def __repr__(self) -> str:
        return "<host peer>"


class TunDeviceHandle:
    """A device built for one test, the namespace it lives in (None: the host's stack, on macOS
    and the BSDs), and its kernel-side peer."""

    def __init__(
        self, device: SyncDevice | AsyncDevice, netns: NetNamespace | None, options: dict[str, Any]
    ) -> None:
        self.device = device
        self.netns = netns
        self.peer: Peer | HostPeer = Peer(netns) if netns is not None else HostPeer()
        self.options = options

    @property
    def name(self) -> str:
        """The device's interface name."""
        return self.device.name

    def capture(self, path: str | None = None) -> Capture:
        """A capture of the device's interface (use as a context manager)."""
        return Capture(self.netns, self.device.name, path)

    def __repr__(self) -> str:
        return f"<tun_device {self.device!r} in {self.netns!r}>"
