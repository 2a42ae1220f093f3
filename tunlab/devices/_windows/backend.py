"""The Windows backend: TUN is Wintun (wintun.py), TAP is tap-windows6 (tap.py); both are
configured through iphlpapi by LUID and wait on Win32 event handles (no fd)."""

from __future__ import annotations

import os
from typing import ClassVar

from tunlab.devices._backend import Bytes, DeviceBackend, WritableBuffer
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig
from tunlab.devices._layer import Layer
from tunlab.devices._windows import tap, wintun
from tunlab.devices._windows.win32 import Win32


class WindowsDevice(DeviceBackend):
    """Chooses Wintun or tap-windows6 by layer; instances are one of the two."""

    platform: ClassVar[str] = "win32"

    @classmethod
    def win32(cls, wintun_dll: str | os.PathLike[str] | None = None) -> Win32:
        """The Windows calls this backend makes (a test double replaces it)."""
        return Win32(wintun_dll)

    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        return wintun.CAPABILITIES if layer is Layer.L3 else tap.CAPABILITIES

    @classmethod
    def create(cls, config: DeviceConfig) -> DeviceBackend:
        """Wintun for TUN (or tap-windows6's TUN mode when asked), tap-windows6 for TAP; the
        driver's own option rules are checked before anything is made."""
        opts = config.windows
        if config.layer is Layer.L3 and opts.driver == "tap-windows6":
            wintun_only = opts.wintun_options_set()
            if wintun_only:
                raise ValueError(
                    f"{', '.join(wintun_only)}: Wintun options, but windows_driver is tap-windows6"
                )
            if not config.ipv4:
                raise ValueError(
                    "windows_driver('tap-windows6'): its TUN mode (CONFIG_TUN) needs an IPv4 "
                    "address: add .ipv4(...)"
                )
        win = cls.win32(opts.wintun_dll)
        if config.layer is Layer.L3 and opts.driver != "tap-windows6":
            return wintun.WintunDevice.create(config, win)
        return tap.TapWindowsDevice.create(config, win)

    def recv_into(self, buffer: WritableBuffer) -> int:  # pragma: no cover - instances are subclasses
        raise NotImplementedError

    def send(self, data: Bytes) -> int:  # pragma: no cover
        raise NotImplementedError

    def close(self, *, release: bool = False) -> int | None:  # pragma: no cover
        raise NotImplementedError
