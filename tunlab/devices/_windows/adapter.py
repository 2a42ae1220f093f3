"""What the Wintun and tap-windows6 devices share: a network adapter configured through
iphlpapi by its LUID, frames that arrive without an fd (a backend's `_fill()` takes one when
there is one), and waits on event handles that close() wakes before anything goes away."""

from __future__ import annotations

import ipaddress
import threading
from typing import ClassVar

from tunlab.devices._backend import Configurator, DeviceBackend, WritableBuffer
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import LinkSettings
from tunlab.devices._layer import Layer
from tunlab.devices._readiness import Readiness
from tunlab.devices._windows.ipconfig import IPAddress, IpConfig, IPInterface
from tunlab.devices._windows.readiness import HandleReadiness
from tunlab.devices._windows.win32 import Win32
from tunlab.errors import DeviceClosedError, DeviceError


class WindowsAdapter(DeviceBackend):
    """An adapter with a pending-frame slot, a close event and a handle readiness."""

    platform: ClassVar[str] = "win32"

    def __init__(
        self,
        layer: Layer,
        win: Win32,
        name: str,
        luid: int,
        *,
        owned: bool,
        capabilities: frozenset[Capability],
    ) -> None:
        super().__init__(layer, owned=owned, capabilities=capabilities)
        self.win = win
        self._name = name
        self.ip = IpConfig(win, luid)
        self._closing = win.create_event()
        self._pending: bytes | None = None  # a frame taken by a readiness check, not yet read
        self._lock = threading.Lock()
        self.added: list[IPAddress] = []  # addresses tunlab set (taken back from adapters not its own)
        self._readiness = HandleReadiness(win, self._read_handle, self._poll, self._closing)
        self.config: AdapterConfig = AdapterConfig(self)

    # ---- what each device supplies --------------------------------------------------------------
    def _read_handle(self) -> int:
        """The event that is signalled when a frame may be there."""
        raise NotImplementedError

    def _fill(self) -> bytes | None:
        """Take the next frame from the driver if one is there (called under the lock)."""
        raise NotImplementedError

    # ---- frames -----------------------------------------------------------------------------------
    def _poll(self) -> bool:
        with self._lock:
            if self._pending is None:
                self._pending = self._fill()
            return self._pending is not None

    def _next(self) -> bytes:
        while True:
            if self._poll():
                with self._lock:
                    frame, self._pending = self._pending, None
                if frame is not None:
                    return frame
                continue
            if self._nonblocking:
                raise BlockingIOError(11, f"no frame on '{self._name}' now")
            self._readiness.wait()

    def recv_into(self, buffer: WritableBuffer) -> int:
        frame = self._next()
        view = memoryview(buffer).cast("B")
        n = min(len(frame), len(view))  # a short buffer truncates, as a TUN read does
        view[:n] = frame[:n]
        return n

    def _check(self) -> None:
        if self.closed:
            raise DeviceClosedError()

    def readiness(self) -> Readiness:
        self._check()
        return self._readiness

    def _wake_all(self) -> None:
        """First step of close(): every waiter wakes (DeviceClosedError) and has left."""
        self.win.set_event(self._closing)
        self._readiness.drain()

    # ---- what each device does its own way ------------------------------------------------------
    def set_up(self, up: bool) -> None:
        """Bring the link up or down (Wintun: a session; tap-windows6: the media status)."""
        raise NotImplementedError

    def is_up(self) -> bool:
        raise NotImplementedError

    def _take_back(self) -> None:
        """On close: the routes tunlab added, and on an adapter that stays (not tunlab's) the
        addresses it set too; what fails here is already gone."""
        if not self._owned:
            for address in reversed(self.added):
                try:
                    self.ip.remove_address(address)
                except DeviceError:
                    pass
        self.added.clear()
        self.ip.remove_routes()


class AdapterConfig(Configurator):
    """A Windows adapter's interface, configured through iphlpapi by its LUID."""

    def __init__(self, device: WindowsAdapter) -> None:
        super().__init__(device)
        self.dev = device

    def configure(self, settings: LinkSettings) -> None:
        """MTU, up, addresses, down — the order tun-rs and the other backends use."""
        dev = self.dev
        dev._check()
        if settings.mac is not None:
            self._no("set_mac_address", Capability.MAC)
        if settings.tx_queue_len is not None:
            self._no("tx_queue_len", Capability.TX_QUEUE_LEN)
        if settings.mtu is not None:
            dev.ip.set_mtu(settings.mtu)
        if settings.enabled:
            dev.set_up(True)
        for v4 in settings.ipv4:
            self._add_address(v4.interface, v4.destination)
        for v6 in settings.ipv6:
            self._add_address(v6)
        if settings.enabled is False:
            dev.set_up(False)

    def _add_address(self, iface: IPInterface, destination: ipaddress.IPv4Address | None = None) -> None:
        self.dev.ip.add_address(iface, destination)
        self.dev.added.append(iface.ip)

    def name(self) -> str:
        self.dev._check()
        return self.dev._name

    def if_index(self) -> int:
        self.dev._check()
        return self.dev.win.luid_to_index(self.dev.ip.luid)

    def mtu(self) -> int:
        self.dev._check()
        return self.dev.ip.mtu()

    def addresses(self) -> list[IPInterface]:
        self.dev._check()
        return self.dev.ip.addresses()

    def remove_address(self, address: IPAddress) -> None:
        self.dev._check()
        self.dev.ip.remove_address(address)
        if address in self.dev.added:
            self.dev.added.remove(address)

    def is_running(self) -> bool:
        self.dev._check()
        return self.dev.is_up()
