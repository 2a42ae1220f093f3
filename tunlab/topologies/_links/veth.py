"""type: veth — a veth pair between two nodes (the brief form `endpoints: [a:eth0, b:eth0]`).

Impaired where the kernel cannot do it, the pair becomes two TAP devices with a relay between
them; to a VM it is one TAP device, the peer's interface, whose fd is the guest's NIC.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from tunlab.topologies._catalog import Iface
from tunlab.topologies._links import wiring
from tunlab.topologies._links.base import LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step


class VethLink(LinkModel):
    """A veth pair: the brief form {endpoints: ["h1:eth0", "h2:eth0"]} is one."""

    type: Literal["veth"] = "veth"


class Veth(LinkType):
    name = "veth"
    model = VethLink
    rank = 10
    default = True

    def across_hosts(self, link: LinkModel) -> dict[str, Any] | None:
        return {"layer": "tap"}  # Ethernet across: a TAP in each node, frames relayed over UDP

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        ends, label = rt.ends(li), rt.label(li)
        if rt.placements[li].relayed:
            return [
                (
                    Phase.LINKS,
                    Step(
                        f"tap-pair {label} (a relay carries the impairment)",
                        functools.partial(wiring.relay_ends, rt, li, ends),
                        functools.partial(wiring.close_devices, rt, wiring.keys(ends)),
                    ),
                ),
                wiring.relay_step(rt, li),
            ]
        if any(rt.in_guest(e) for e in ends):
            step = Step(f"veth {label} (TAP to a VM)", functools.partial(_guest_veth, rt, li, ends))
        else:
            step = Step(f"veth {label}", functools.partial(_veth, rt, ends[0], ends[1]))
        return [(Phase.LINKS, step), *wiring.kernel_impair_steps(rt, li)]


def _veth(rt: Runtime, a: Iface, b: Iface) -> None:
    batch = rt.batch(rt.netns(a.node))
    batch.add_veth(a.name, b.name, rt.netns(b.node), f"creating veth {a.node}:{a.name} <-> {b.node}:{b.name}")
    batch.commit()


def guest_bridge_names(li: int) -> tuple[str, str, str]:
    """(bridge, first VM's TAP, second VM's TAP) of a veth between two VMs."""
    return f"tlb{li}", f"tlv{li}e0", f"tlv{li}e1"


def _guest_veth(rt: Runtime, li: int, ends: list[Iface]) -> None:
    """A veth to a VM is one TAP: the peer's interface, its fd the guest's NIC. Between two VMs:
    a TAP for each on a bridge in the first VM's host-side namespace."""
    guests = [e for e in ends if rt.in_guest(e)]
    hosts = [e for e in ends if not rt.in_guest(e)]
    if hosts:
        wiring.guest_taps(rt, rt.netns(hosts[0].node), hosts[0].name, guests[0])
        return
    ns = rt.netns(ends[0].node)
    ipr = rt.ipr(ns)
    br, *taps = guest_bridge_names(li)
    ipr.link("add", ifname=br, kind="bridge")
    for name, end in zip(taps, ends, strict=True):
        wiring.guest_taps(rt, ns, name, end)
        ipr.link("set", index=rt.index(ns, name), master=rt.index(ns, br), state="up")
    ipr.link("set", index=rt.index(ns, br), state="up")
