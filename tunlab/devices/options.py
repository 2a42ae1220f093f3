"""Per-platform option groups: options that only one platform has.

Generic options (name, layer, addresses, MTU, MAC, up/down, ...) live in DeviceConfig; options
of one platform live in that platform's group (LinuxOptions), so the generic code never grows
a field per OS. config.requirements() says which capability each option needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunlab.linux.netns import NetNamespace


@dataclass
class LinuxOptions:
    """What only Linux's /dev/net/tun offers."""

    offload: bool = False  # IFF_VNET_HDR + TUNSETOFFLOAD: TSO/USO super-packets
    multi_queue: bool = False  # IFF_MULTI_QUEUE: one fd per queue (try_clone)
    owner: int | None = None  # TUNSETOWNER
    group: int | None = None  # TUNSETGROUP
    netns: str | NetNamespace | None = None  # create the interface inside this namespace
