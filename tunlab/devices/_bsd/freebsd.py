"""FreeBSD: /dev/tun and /dev/tap clone a fresh unit (TUNGIFNAME names it), TUNSIFHEAD turns
the address-family header on, DAD is switched off for the interface by a get-modify-set of its
ND6 flags (never a zeroed struct) and per address by IN6_IFF_NODAD (0x20, not tun-rs's 0x100),
and an interface can be renamed (SIOCSIFNAME). cross-os-abi.md §4."""

from __future__ import annotations

import ctypes
import re
import struct
from typing import ClassVar

from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.devices._bsd.chardev import CharDevice
from tunlab.errors import DeviceError, InterfaceExistsError


class FreeBsdDevice(CharDevice):
    """The FreeBSD backend (platform 'freebsd')."""

    platform: ClassVar[str] = "freebsd"
    abi: ClassVar[A.Abi] = A.FREEBSD
    tun: ClassVar[A.TunAbi] = A.FREEBSD_TUN

    @classmethod
    def can_rename(cls) -> bool:
        return True

    def prepare(self) -> None:
        super().prepare()
        self.disable_dad()

    def disable_dad(self) -> None:
        """SIOCGIFINFO_IN6, set ND6_IFF_NO_DAD in the flags it returned, SIOCSIFINFO_IN6."""
        req = bytearray(self.tun.in6_ndireq)
        req[:16] = wire.ifname(self._name)
        at = self.tun.in6_ndireq_flags_at
        out = self.iface.request(self.abi.af_inet6, self.tun.SIOCGIFINFO_IN6, req, "SIOCGIFINFO_IN6")
        flags = struct.unpack_from("I", out, at)[0]
        struct.pack_into("I", out, at, flags | A.ND6_IFF_NO_DAD)
        self.iface.request(self.abi.af_inet6, self.tun.SIOCSIFINFO_IN6, out, "SIOCSIFINFO_IN6 (DAD off)")

    def rename(self, name: str) -> None:
        """SIOCSIFNAME: ifr_data points at the new name (IFNAMSIZ bytes)."""
        self._check()
        new = wire.ifname(name)  # validates length
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
            raise ValueError(f"name: {name!r}: letters, digits, '_', '.', '-', starting with a letter")
        holder = ctypes.create_string_buffer(new, len(new))
        req = wire.ifreq(self.abi, self._name, struct.pack("Q", ctypes.addressof(holder)))
        try:
            self.iface.request(A.AF_INET, self.tun.SIOCSIFNAME, req, f"renaming to {name}")
        except DeviceError as exc:
            if "File exists" in str(exc):
                raise InterfaceExistsError(f"an interface named {name} already exists") from None
            raise
        finally:
            del holder
        self._name = name
        self.iface.name = name
