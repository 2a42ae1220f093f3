"""type: tun-pair — two TUN devices, one in each node, relayed by tunlab (super-packets cross
with offload); its impairment is a stage of that relay. To a VM the pair is TAP devices."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import Field

from tunlab.devices._builder import DeviceBuilder
from tunlab.topologies._catalog import Iface, Issue
from tunlab.topologies._fields import Switch
from tunlab.topologies._links import wiring
from tunlab.topologies._links.base import CheckContext, KernelTarget, LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step


class TunPairLink(LinkModel):
    """Two TUN devices and a relay between them."""

    type: Literal["tun-pair"]
    offload: Switch = Field(True, description="TUN devices with the virtio-net header (super-packets cross)")


class TunPair(LinkType):
    name = "tun-pair"
    model = TunPairLink
    rank = 40
    l2 = False
    own_relay = True
    ethtool_offload = False
    graph_style = "bold"
    mermaid_arrow = "<==>"

    def across_hosts(self, link: LinkModel) -> dict[str, Any] | None:
        return {"layer": "tun", "offload": link.offload if isinstance(link, TunPairLink) else True}

    def check(self, ctx: CheckContext, li: int, link: LinkModel) -> list[Issue]:
        if link.impair is not None and link.impair_via == "kernel":
            return [
                Issue(
                    ("links", li, "impair_via"),
                    "a tun-pair is impaired in its own relay: impair_via: kernel is for veth, bridge and "
                    "vxlan links",
                )
            ]
        return []

    def check_end(self, ctx: CheckContext, li: int, ei: int, iface: Iface) -> list[Issue]:
        if iface.settings.offload is not None:
            return [
                Issue(
                    ("links", li, "endpoints", ei, "offload"),
                    "set offload on the tun-pair link, not on its ends",
                )
            ]
        return []

    def _to_guest(self, rt: Runtime, li: int) -> bool:
        return any(rt.in_guest(e) for e in rt.ends(li))

    def end_is_l2(self, rt: Runtime, end: Iface) -> bool:
        return end.link_index is not None and self._to_guest(rt, end.link_index)

    def configured_by_netlink(self, rt: Runtime, end: Iface) -> bool:
        # TUN devices are built configured; the TAP devices of a pair to a VM are not
        return not rt.in_guest(end) and self.end_is_l2(rt, end)

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        ends, label = rt.ends(li), rt.label(li)
        undo = functools.partial(wiring.close_devices, rt, wiring.keys(ends))
        if self._to_guest(rt, li):
            make = Step(
                f"tap-pair {label} (a VM's NIC is Ethernet: TAP devices)",
                functools.partial(wiring.relay_ends, rt, li, ends),
                undo,
            )
        else:
            make = Step(f"tun-pair {label}", functools.partial(_tun_pair, rt, li, ends), undo)
        return [(Phase.LINKS, make), wiring.relay_step(rt, li)]

    def kernel_targets(self, rt: Runtime, li: int) -> list[KernelTarget]:
        return []

    def edge_label(self, link: LinkModel) -> str:
        offload = isinstance(link, TunPairLink) and link.offload
        return f"{self.name}{' (offload)' if offload else ''}"


def _tun_pair(rt: Runtime, li: int, ends: list[Iface]) -> None:
    link = rt.link(li)
    offload = link.offload if isinstance(link, TunPairLink) else True
    for end in ends:
        wiring.build_device(rt, end, DeviceBuilder().offload(offload))
