"""tap-windows6: Windows TAP adapters (OpenVPN's driver) through their device file.

Adapters are found in the registry by ComponentId (root\\tap0901 or tap0901) and opened as
\\\\.\\Global\\{GUID}.tap, which the driver lets one program hold at a time. Each ReadFile or
WriteFile moves one Ethernet frame; reads are overlapped, and the read's event is the
readiness handle. With no free adapter, one is added through SetupAPI (the driver must be in
the driver store) and removed on close; an adapter tunlab only opened stays, and on close gets
back the addresses and routes it had, with its media reported disconnected.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import time
import uuid
from collections.abc import Mapping
from typing import ClassVar

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
    TunUnavailableError,
)

TUN_CAPABILITIES = frozenset({Capability.ADDRESSES, Capability.MTU, Capability.ENABLE, Capability.IF_INDEX})
CAPABILITIES = TUN_CAPABILITIES | {Capability.TAP}
READ_SIZE = 14 + 4 + 65535  # Ethernet header, an 802.1Q tag, the largest frame the driver passes
INSTALL_HINT = (
    "install OpenVPN's tap-windows6 driver (tap-windows 9.21+, hardware id root\\tap0901) into the "
    "driver store, e.g. `pnputil /add-driver OemVista.inf /install`; tunlab then adds an adapter itself"
)


class TapWindowsDevice(WindowsAdapter):
    """One open tap-windows6 adapter: Ethernet frames, or bare IP packets in its TUN mode."""

    _hints: ClassVar[Mapping[Capability, str]] = {
        Capability.MAC: "tap-windows6 takes its MAC from the adapter's NetworkAddress setting, applied "
        "when the adapter restarts; set it in the adapter's Advanced properties",
    }

    def __init__(
        self,
        win: Win32,
        handle: int,
        guid: uuid.UUID,
        name: str,
        luid: int,
        *,
        created: str | None = None,
        layer: Layer = Layer.L2,
    ) -> None:
        self.created = created  # the device instance id of an adapter tunlab added
        self.handle: int | None = handle
        self.guid = guid
        self._ov = W.OVERLAPPED()
        self._ov.hEvent = win.create_event()
        self._buf = (ctypes.c_char * READ_SIZE)()
        self._reading = False  # a ReadFile is outstanding into _buf
        self._up = False
        caps = CAPABILITIES if layer is Layer.L2 else TUN_CAPABILITIES
        super().__init__(layer, win, name, luid, owned=created is not None, capabilities=caps)

    # ---- opening -----------------------------------------------------------------------------------
    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        return CAPABILITIES if layer is Layer.L2 else frozenset()

    @classmethod
    def create(cls, config: DeviceConfig, win: Win32 | None = None) -> TapWindowsDevice:
        """Open a free tap-windows6 adapter (the one named by .name(), if given); with none free
        and no name asked for, add one (removed again on close)."""
        win = win or Win32()
        try:
            adapters = win.tap_adapters()
        except OSError:
            adapters = []  # no adapter has ever been installed: the class key has none
        busy: list[str] = []
        names: list[str] = []
        for guid, _component in adapters:
            try:
                luid = win.guid_to_luid(guid)
                name = win.luid_to_alias(luid)
            except OSError:
                continue  # a registry entry of a removed adapter: no interface behind it
            names.append(name)
            if config.name is not None and name != config.name:
                continue
            handle = cls._open(win, guid, name, busy)
            if handle is not None:
                return cls._configured(win, handle, guid, name, luid, config, created=None)
        if config.name is not None and config.name not in names:
            raise TunUnavailableError(
                f"no tap-windows6 adapter named '{config.name}' (there are: {', '.join(names) or 'none'})"
            )
        if config.name is not None:
            raise InterfaceExistsError(
                f"TAP adapter '{config.name}' is open in another program: the driver allows one at a time"
            )
        return cls._add_adapter(win, config, busy)

    @classmethod
    def _open(cls, win: Win32, guid: uuid.UUID, name: str, busy: list[str]) -> int | None:
        try:
            return win.create_file(W.TAP_DEVICE_PATH.format(guid=str(guid).upper()))
        except OSError as exc:
            code = winerror_of(exc)
            # the driver lets one handle in: a second open fails with ERROR_GEN_FAILURE
            # (tap-windows6 TapDeviceCreate); a sharing violation means the same
            if code in (W.ERROR_GEN_FAILURE, W.ERROR_SHARING_VIOLATION):
                busy.append(name)
                return None
            if code == W.ERROR_FILE_NOT_FOUND:
                busy.append(f"{name} (disabled)")
                return None
            if code == W.ERROR_ACCESS_DENIED:
                raise DevicePermissionError(f"opening TAP adapter '{name}' needs Administrator") from None
            raise DeviceError(f"opening TAP adapter '{name}' failed: {exc.strerror or exc}") from None

    @classmethod
    def _add_adapter(cls, win: Win32, config: DeviceConfig, busy: list[str]) -> TapWindowsDevice:
        """A new root\\tap0901 adapter through SetupAPI, opened and configured, or nothing left."""
        try:
            instance, guid = win.create_tap_adapter(W.TAP_HARDWARE_ID)
        except OSError as exc:
            code = winerror_of(exc)
            also = f" (the adapters there are open elsewhere: {', '.join(busy)})" if busy else ""
            if code in (W.ERROR_NO_COMPAT_DRIVERS, W.ERROR_NO_DRIVER_SELECTED):
                raise TunUnavailableError(
                    f"no free TAP adapter and none can be added{also}: {INSTALL_HINT}"
                ) from None
            if code == W.ERROR_ACCESS_DENIED:
                raise DevicePermissionError(
                    "adding a TAP adapter needs Administrator (run elevated)"
                ) from None
            raise DeviceError(f"adding a tap-windows6 adapter failed{also}: {exc.strerror or exc}") from None
        try:
            luid = win.guid_to_luid(guid)
            name = win.luid_to_alias(luid)
            handle = None
            for _ in range(50):  # the new adapter's device file appears once it has started
                handle = cls._open(win, guid, name, [])
                if handle is not None:
                    break
                time.sleep(0.1)
            if handle is None:
                raise DeviceError(f"the new TAP adapter '{name}' did not start: see Device Manager")
        except BaseException:
            win.remove_device(instance)
            raise
        return cls._configured(win, handle, guid, name, luid, config, created=instance)

    @classmethod
    def _configured(
        cls,
        win: Win32,
        handle: int,
        guid: uuid.UUID,
        name: str,
        luid: int,
        config: DeviceConfig,
        created: str | None,
    ) -> TapWindowsDevice:
        dev = cls(win, handle, guid, name, luid, created=created, layer=config.layer)
        try:
            dev.check_driver()
            if config.layer is Layer.L3:
                dev.config_tun(config.ipv4[0].interface)
            dev.config.configure(config.link_settings())
        except BaseException:
            dev.close()
            raise
        return dev

    def check_driver(self) -> None:
        """GET_VERSION: 3 ULONGs (major, minor, debug); tunlab needs 9.21 or newer (IPv6, CONFIG_TUN)."""
        major, minor, _debug = struct.unpack("<III", self._ioctl(W.TAP_IOCTL_GET_VERSION, b"", 12))
        if (major, minor) < (9, 21):
            raise TunUnavailableError(
                f"tap-windows6 driver {major}.{minor} is too old (need 9.21+): update it"
            )

    def config_tun(self, iface: ipaddress.IPv4Interface) -> None:
        """CONFIG_TUN: the driver answers ARP itself and moves bare IP packets (local address,
        remote network, netmask; network byte order)."""
        net = iface.network
        self._ioctl(
            W.TAP_IOCTL_CONFIG_TUN, iface.ip.packed + net.network_address.packed + net.netmask.packed, 0
        )

    def _ioctl(self, code: int, data: bytes, out: int) -> bytes:
        if self.handle is None:
            raise DeviceClosedError()
        try:
            return self.win.device_io_control(self.handle, code, data, out)
        except OSError as exc:
            raise DeviceError(
                f"tap-windows6 ioctl {code:#x} on '{self._name}' failed: {exc.strerror or exc}"
            ) from None

    # ---- frame I/O -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.handle is None

    def _read_handle(self) -> int:
        return int(self._ov.hEvent)

    def _fill(self) -> bytes | None:
        """A finished read's frame, starting a read if none is outstanding."""
        if self.handle is None:
            raise DeviceClosedError()
        if not self._reading:
            self.win.reset_event(int(self._ov.hEvent))
            got = self.win.start_read(self.handle, ctypes.addressof(self._buf), READ_SIZE, self._ov)
            if got is not None:
                return self._buf.raw[:got]
            self._reading = True
            return None
        if self.win.wait_any([int(self._ov.hEvent)], 0) is None:
            return None
        self._reading = False  # finished, well or not: the next read starts afresh
        got = self.win.overlapped_result(self.handle, self._ov)
        return self._buf.raw[:got]

    def _cancel_read(self, handle: int) -> None:
        """Cancel the outstanding read and wait until the driver has let go of its buffer
        (CancelIoEx only asks; the buffer is freed with this device)."""
        self.win.cancel_io(handle, self._ov)
        try:
            self.win.overlapped_result(handle, self._ov, wait=True)
        except OSError:
            pass  # ERROR_OPERATION_ABORTED: what a cancelled read completes with
        self._reading = False

    def send(self, data: Bytes) -> int:
        if self.handle is None:
            raise DeviceClosedError()
        frame = bytes(data)
        holder = ctypes.create_string_buffer(frame, len(frame))
        try:
            return self.win.write(self.handle, ctypes.addressof(holder), len(frame))
        except OSError as exc:
            raise DeviceError(
                f"writing to TAP adapter '{self._name}' failed: {exc.strerror or exc}"
            ) from None

    # ---- configuration ------------------------------------------------------------------------------
    def set_up(self, up: bool) -> None:
        self._media(up)

    def is_up(self) -> bool:
        return self._up

    def _media(self, connected: bool) -> None:
        """SET_MEDIA_STATUS: the cable plugged in (traffic flows) or out."""
        self._ioctl(W.TAP_IOCTL_SET_MEDIA_STATUS, struct.pack("<I", int(connected)), 4)
        self._up = connected

    def close(self, *, release: bool = False) -> int | None:
        if release:
            unsupported(self, "into_fd", Capability.FD)
        handle = self.handle
        if handle is None:
            return None
        self._wake_all()
        try:
            self._take_back()
            if self._up:
                try:
                    self._media(False)
                except DeviceError:
                    pass
        finally:
            if self._reading:
                self._cancel_read(handle)
            self.handle = None
            self.win.close_handle(handle)
            self.win.close_handle(int(self._ov.hEvent))
            self.win.close_handle(self._closing)
            if self.created is not None:  # only an adapter tunlab added goes away
                created, self.created = self.created, None
                self.win.remove_device(created)
        return None
