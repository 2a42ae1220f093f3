"""OpenBSD: /dev/tunN and /dev/tapN (no cloning node; SIOCIFCREATE where the unit's interface
is missing), the address-family header always on (no TUNSIFHEAD), and no IN6_IFF_NODAD in
current headers: an IPv6 address is ready once DAD clears its tentative flag, which the
backend waits for. cross-os-abi.md §5."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd.chardev import CharDevice, wait_tentative


class OpenBsdDevice(CharDevice):
    """The OpenBSD backend (platform 'openbsd')."""

    platform: ClassVar[str] = "openbsd"
    abi: ClassVar[A.Abi] = A.OPENBSD
    tun: ClassVar[A.TunAbi] = A.OPENBSD_TUN

    def wait_dad(self, address: ipaddress.IPv6Address) -> None:
        wait_tentative(self, address)
