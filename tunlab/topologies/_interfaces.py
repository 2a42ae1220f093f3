"""Configuring a node's interfaces from the host: MTU, MAC, ethtool features, up, addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._linux import ethtool
from tunlab._linux.netlink import indexes
from tunlab.topologies._catalog import Iface
from tunlab.topologies._fields import OffloadFeatures
from tunlab.topologies._links import type_of

if TYPE_CHECKING:
    from tunlab.topologies._runtime import Runtime


def configure(rt: Runtime, node: str, ifaces: list[Iface]) -> None:
    """MTU, MAC, offload features, up, addresses of a node's interfaces: one netlink batch."""
    ns = rt.netns(node)
    index = indexes(ns, [i.name for i in ifaces])
    for iface in ifaces:  # ethtool features first: switching some needs the link down
        features = wanted_features(rt, iface)
        if features:
            rt.state.offload_original[f"{node}:{iface.name}"] = ethtool.read_features(ns, iface.name)
            ethtool.set_features(ns, iface.name, features)
    batch = rt.batch(ns)
    for iface in ifaces:
        s = iface.settings
        where = f"{node}:{iface.name}"
        # up before addresses: an IPv6 address added to a running link joins its solicited-node
        # group at once, so the first neighbour solicitation is answered (no 1 s retransmit)
        batch.set_link(index[iface.name], f"setting up {where}", up=True, mtu=s.mtu, mac=s.mac)
        l2 = is_l2(rt, iface)
        for addr in iface.addresses:
            batch.add_address(index[iface.name], addr, f"adding address {addr} to {where}", broadcast=l2)
    batch.commit()


def is_l2(rt: Runtime, iface: Iface) -> bool:
    """An interface that carries Ethernet frames (a TAP, or an L2 link's end)."""
    if iface.link_index is None:
        return iface.settings.type == "tap"
    return type_of(rt, iface.link_index).end_is_l2(rt, iface)


def wanted_features(rt: Runtime, iface: Iface) -> dict[str, bool]:
    """The ethtool features an interface's `offload:` asks for ({} when it asks for none)."""
    off = iface.settings.offload
    if isinstance(off, OffloadFeatures):
        return off.wanted()
    linked = iface.link_index is not None and type_of(rt, iface.link_index).ethtool_offload
    if isinstance(off, bool) and linked:
        return dict.fromkeys(("gro", "gso", "tso", "tx-checksum"), off)
    return {}
