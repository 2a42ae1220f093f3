"""Per-platform option groups, and which capability each option a builder collected needs.

Generic options (name, layer, addresses, MTU, MAC, up/down, ...) live in DeviceConfig; options
that only one platform has live in that platform's group (LinuxOptions), so the generic code
never grows a field per OS. The builder checks requirements() against the chosen backend's
capabilities before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunlab.devices.capabilities import Capability

if TYPE_CHECKING:
    from tunlab.devices.config import DeviceConfig
    from tunlab.linux.netns import NetNamespace


@dataclass
class LinuxOptions:
    """What only Linux's /dev/net/tun offers."""

    offload: bool = False  # IFF_VNET_HDR + TUNSETOFFLOAD: TSO/USO super-packets
    multi_queue: bool = False  # IFF_MULTI_QUEUE: one fd per queue (try_clone)
    owner: int | None = None  # TUNSETOWNER
    group: int | None = None  # TUNSETGROUP
    netns: str | NetNamespace | None = None  # create the interface inside this namespace


def requirements(cfg: DeviceConfig) -> list[tuple[str, Capability]]:
    """(option as the user wrote it, capability it needs) for every option that was set."""
    from tunlab.devices.layer import Layer

    need: list[tuple[str, Capability]] = []
    if cfg.layer is Layer.L2:
        need.append(("layer(Layer.L2)", Capability.TAP))
    if cfg.ipv4 or cfg.ipv6:
        need.append(("ipv4/ipv6", Capability.ADDRESSES))
    if cfg.mtu is not None:
        need.append(("mtu", Capability.MTU))
    if cfg.mac is not None:
        need.append(("mac_addr", Capability.MAC))
    if cfg.packet_information:
        need.append(("packet_information(True)", Capability.PACKET_INFORMATION))
    if cfg.enabled is not None:
        need.append(("enable", Capability.ENABLE))
    if cfg.tx_queue_len is not None:
        need.append(("tx_queue_len", Capability.TX_QUEUE_LEN))
    if cfg.persist:
        need.append(("persist(True)", Capability.PERSIST))
    lx = cfg.linux
    if lx.offload:
        need.append(("offload(True)", Capability.OFFLOAD))
    if lx.multi_queue:
        need.append(("multi_queue(True)", Capability.MULTI_QUEUE))
    if lx.owner is not None:
        need.append(("owner", Capability.OWNER))
    if lx.group is not None:
        need.append(("group", Capability.OWNER))
    if lx.netns is not None:
        need.append(("netns", Capability.NETNS))
    return need
