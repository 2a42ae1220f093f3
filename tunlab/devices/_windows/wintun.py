"""Wintun: Windows TUN adapters through wintun.dll (ctypes), configured through iphlpapi.

A Wintun adapter has no fd: packets move through a ring shared with the driver, and its
read-wait event says when one has arrived. recv copies a packet out of the ring into the
caller's buffer and releases it; send allocates room in the ring, copies in and sends.
Frames are bare IPv4/IPv6 packets, as on Linux TUN.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os

from tunlab.devices._backend import Bytes, unsupported
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig
from tunlab.devices._layer import Layer
from tunlab.devices._windows import abi as W
from tunlab.devices._windows.adapter import WindowsAdapter
from tunlab.devices._windows.win32 import Win32, winerror_of
from tunlab.errors import (
    DeviceClosedError,
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    RingFullError,
    TunUnavailableError,
)

log = logging.getLogger("tunlab.wintun")
DEFAULT_RING = 0x400000  # 4 MiB, as wireguard-go
DEFAULT_TUNNEL_TYPE = "tunlab"
_LEVELS = {
    W.WINTUN_LOG_INFO: logging.INFO,
    W.WINTUN_LOG_WARN: logging.WARNING,
    W.WINTUN_LOG_ERR: logging.ERROR,
}
_names = itertools.count()

CAPABILITIES = frozenset(
    {Capability.ADDRESSES, Capability.MTU, Capability.ENABLE, Capability.IF_INDEX, Capability.WINTUN}
)


def _log_line(level: int, _stamp: int, text: str) -> None:
    """One of Wintun's log lines, to the 'tunlab.wintun' logger."""
    log.log(_LEVELS.get(level, logging.INFO), "%s", text)


class WintunDevice(WindowsAdapter):
    """One Wintun adapter and its session."""

    def __init__(
        self, win: Win32, adapter: int, session: int, name: str, capacity: int, *, created: bool = True
    ) -> None:
        self.adapter = adapter
        self.session: int | None = session
        self.capacity = capacity
        self._closed = False
        super().__init__(
            Layer.L3, win, name, win.adapter_luid(adapter), owned=created, capabilities=CAPABILITIES
        )

    # ---- creation ------------------------------------------------------------------------------
    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        return CAPABILITIES if layer is Layer.L3 else frozenset()

    @classmethod
    def create(cls, config: DeviceConfig, win: Win32 | None = None) -> WintunDevice:
        opts = config.windows
        win = win or Win32(opts.wintun_dll)
        name = config.name or f"tunlab{os.getpid()}-{next(_names)}"
        created = True
        try:
            win.set_logger(_log_line)  # the DLL's one logger: set on every creation
            adapter = cls._existing(win, config.name)
            if adapter is not None:
                created = False  # an adapter of that name is there: use it, as TUNSETIFF does
            else:
                adapter = win.create_adapter(name, opts.tunnel_type or DEFAULT_TUNNEL_TYPE, opts.guid)
        except FileNotFoundError as exc:
            raise TunUnavailableError(str(exc)) from None
        except OSError as exc:
            raise _creation_error(exc, name) from None
        dev: WintunDevice | None = None
        try:
            capacity = opts.ring_capacity or DEFAULT_RING
            try:
                session = win.start_session(adapter, capacity)
            except OSError as exc:
                if created:
                    raise
                raise InterfaceExistsError(
                    f"Wintun adapter '{name}' exists and its session could not be started "
                    f"({exc.strerror or exc}): another program may hold it; close that or pick another name"
                ) from None
            dev = cls(win, adapter, session, name, capacity, created=created)
            dev.config.configure(config.link_settings())
        except BaseException as exc:
            if dev is not None:
                dev.close()
            else:
                win.close_adapter(adapter)  # removes the adapter this handle created
            if isinstance(exc, OSError) and not isinstance(exc, DeviceError):
                raise DeviceError(
                    f"setting up Wintun adapter '{name}' failed: {exc.strerror or exc}"
                ) from None
            raise
        return dev

    @staticmethod
    def _existing(win: Win32, name: str | None) -> int | None:
        """A handle on the adapter of that name, if there is one."""
        if name is None:
            return None
        try:
            return win.open_adapter(name)
        except OSError as exc:
            if winerror_of(exc) in (W.ERROR_FILE_NOT_FOUND, W.ERROR_NOT_FOUND):
                return None
            raise

    # ---- frame I/O -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _live_session(self) -> int:
        if self._closed:
            raise DeviceClosedError()
        if self.session is None:
            raise DeviceError("the adapter is down (enabled(False)): bring it up to move packets", 100)
        return self.session

    def _read_handle(self) -> int:
        return self.win.read_wait_event(self._live_session())

    def _fill(self) -> bytes | None:
        """The next packet out of the ring (copied, then released), or None if it is empty."""
        session = self._live_session()
        try:
            address, size = self.win.receive(session)
        except OSError as exc:
            code = winerror_of(exc)
            if code == W.ERROR_NO_MORE_ITEMS:
                return None
            if code == W.ERROR_HANDLE_EOF:
                raise DeviceClosedError("the Wintun adapter is terminating") from None
            if code == W.ERROR_INVALID_DATA:
                raise DeviceError("the Wintun ring is corrupt: close and re-create the device") from None
            raise
        try:
            return ctypes.string_at(address, size)
        finally:
            self.win.release(session, address)

    def send(self, data: Bytes) -> int:
        session = self._live_session()
        view = memoryview(data).cast("B")
        if len(view) > W.WINTUN_MAX_IP_PACKET_SIZE:
            raise ValueError(f"send: {len(view)} bytes is more than a Wintun packet holds (65535)")
        try:
            address = self.win.allocate(session, len(view))
        except OSError as exc:
            code = winerror_of(exc)
            if code == W.ERROR_BUFFER_OVERFLOW:
                raise RingFullError(
                    f"the Wintun send ring ({self.capacity} bytes) is full: retry, or give "
                    "ring_capacity() more room"
                ) from None
            if code == W.ERROR_HANDLE_EOF:
                raise DeviceClosedError("the Wintun adapter is terminating") from None
            raise
        ctypes.memmove(address, bytes(view), len(view))
        self.win.send_packet(session, address)
        return len(view)

    # ---- configuration -----------------------------------------------------------------------------
    def set_up(self, up: bool) -> None:
        """A session is the link being up: none, and Windows sees the cable unplugged."""
        if up and self.session is None:
            self.session = self.win.start_session(self.adapter, self.capacity)
        elif not up and self.session is not None:
            session, self.session = self.session, None
            self.win.end_session(session)

    def is_up(self) -> bool:
        return self.session is not None

    def close(self, *, release: bool = False) -> int | None:
        if release:
            unsupported(self, "into_fd", Capability.FD)
        if self._closed:
            return None
        self._closed = True
        self._wake_all()  # before the ring goes away
        try:
            self._take_back()
        finally:
            if self.session is not None:
                self.win.end_session(self.session)
                self.session = None
            self.win.close_adapter(self.adapter)  # Wintun removes an adapter this handle created
            self.win.close_handle(self._closing)
        return None


def _creation_error(exc: OSError, name: str) -> DeviceError:
    code = winerror_of(exc)
    if code == W.ERROR_ACCESS_DENIED:
        return DevicePermissionError(f"creating Wintun adapter '{name}' needs Administrator: run elevated")
    if code in (W.ERROR_ALREADY_EXISTS, W.ERROR_OBJECT_ALREADY_EXISTS):
        return InterfaceExistsError(f"a network adapter named '{name}' already exists: pick another name")
    if code == W.ERROR_FILE_NOT_FOUND:
        return TunUnavailableError(
            f"creating Wintun adapter '{name}': the Wintun driver could not be loaded ({exc.strerror})"
        )
    return DeviceError(f"creating Wintun adapter '{name}' failed: {exc.strerror or exc}")
