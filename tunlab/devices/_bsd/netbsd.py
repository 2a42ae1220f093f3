"""NetBSD: /dev/tunN makes its interface on open, /dev/tap clones (TAPGIFNAME names it) and a
named tap is SIOCIFCREATEd first; 144-byte ifreq (every ifreq ioctl encodes it), TUNSIFHEAD
for the address-family header, and the MAC set by SIOCALIFADDR on an AF_LINK socket (NetBSD
has no SIOCSIFLLADDR). cross-os-abi.md §6."""

from __future__ import annotations

import struct
from typing import ClassVar

from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.devices._bsd.chardev import CharDevice
from tunlab.devices._bsd.system import System
from tunlab.devices._config import parse_mac


class NetBsdDevice(CharDevice):
    """The NetBSD backend (platform 'netbsd')."""

    platform: ClassVar[str] = "netbsd"
    abi: ClassVar[A.Abi] = A.NETBSD
    tun: ClassVar[A.TunAbi] = A.NETBSD_TUN

    @classmethod
    def open_unit(cls, sys: System, prefix: str, name: str | None) -> tuple[int, str, bool]:
        if name is not None and prefix == "tap":  # /dev/tapN opens only an existing interface
            existed = sys.if_exists(name)
            if not existed:
                cls._ifcreate(sys, name)
            fd, _, _ = super().open_unit(sys, prefix, name)
            return fd, name, not existed
        return super().open_unit(sys, prefix, name)

    def set_mac(self, mac: str) -> None:
        """SIOCALIFADDR with IFLR_ACTIVE and a sockaddr_dl holding the MAC, on an AF_LINK socket."""
        raw = bytes.fromhex(parse_mac(mac).replace(":", ""))
        req = bytearray(self.tun.if_laddrreq)
        req[:16] = wire.ifname(self._name)
        struct.pack_into("II", req, 16, A.IFLR_ACTIVE, 0)
        sdl = wire.sockaddr_dl(self.abi, 0, raw)
        at = self.tun.if_laddrreq_addr_at
        req[at : at + len(sdl)] = sdl
        self.iface.request(A.AF_LINK, self.tun.SIOCALIFADDR, req, "setting the MAC (SIOCALIFADDR)")
