"""Per-platform option groups: options that only one platform has.

Generic options (name, layer, addresses, MTU, MAC, up/down, ...) live in DeviceConfig; options
of one platform live in that platform's group (LinuxOptions, WindowsOptions), so the generic code never grows
a field per OS. config.requirements() says which capability each option needs.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace


@dataclass
class LinuxOptions:
    """What only Linux's /dev/net/tun offers."""

    offload: bool = False  # IFF_VNET_HDR + TUNSETOFFLOAD: TSO/USO super-packets
    multi_queue: bool = False  # IFF_MULTI_QUEUE: one fd per queue (try_clone)
    owner: int | None = None  # TUNSETOWNER
    group: int | None = None  # TUNSETGROUP
    netns: str | NetNamespace | None = None  # create the interface inside this namespace


@dataclass
class WindowsOptions:
    """What only Windows' TUN offers: Wintun's settings, and which driver makes the TUN."""

    WINTUN_ONLY = ("ring_capacity", "tunnel_type", "guid", "wintun_dll")  # meaningless for tap-windows6

    ring_capacity: int | None = None  # the session's ring: a power of two, 128 KiB .. 64 MiB
    tunnel_type: str | None = None  # shown by Windows as the adapter's description
    guid: uuid.UUID | None = None  # the adapter's GUID (a stable one keeps its Windows settings)
    wintun_dll: str | os.PathLike[str] | None = None  # where wintun.dll is
    driver: str | None = None  # TUN through "wintun" (default) or "tap-windows6" (CONFIG_TUN)

    def wintun_options_set(self) -> list[str]:
        return [name for name in self.WINTUN_ONLY if getattr(self, name) is not None]
