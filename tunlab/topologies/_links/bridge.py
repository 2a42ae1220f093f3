"""type: bridge — a Linux bridge in a namespace of its own, each endpoint a port on it.

A port is a veth (the node's end, the bridge's end); impaired where the kernel cannot do it, a
TAP pair with a relay (a_to_b: node -> bridge); to a VM, the guest's TAP as the port.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import Field

from tunlab._linux.netns import NetNamespace
from tunlab.relay.impair._model import LinkImpairment, Netem
from tunlab.topologies._catalog import Iface, Issue, name_issue
from tunlab.topologies._links import wiring
from tunlab.topologies._links.base import A_TO_B, B_TO_A, CheckContext, KernelTarget, LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step
from tunlab.topologies._state import bridge_ns_name


class BridgeLink(LinkModel):
    """A bridge: every endpoint is a port on it."""

    type: Literal["bridge"]
    name: str | None = Field(None, description="the bridge's name (default br<index>); also names the link")

    @classmethod
    def both_ways(cls, netem: Netem) -> LinkImpairment:
        """On a bridge a_to_b is every node's traffic into the bridge and b_to_a the bridge's to
        each node; one impairment for both directions goes on the way in only, so node to node
        it counts once, as on a veth."""
        return LinkImpairment(a_to_b=netem)


def bridge_name(li: int, link: LinkModel) -> str:
    return link.name or f"br{li}"


def port_name(end: Iface) -> str:
    """The bridge's end of a node's port."""
    return _port(end.endpoint_index or 0, end.node)


def _port(endpoint_index: int, node: str) -> str:
    return f"p{endpoint_index}-{node}"[:15]


class Bridge(LinkType):
    name = "bridge"
    model = BridgeLink
    rank = 20
    endpoints = (1, None)

    def check(self, ctx: CheckContext, li: int, link: LinkModel) -> list[Issue]:
        issues = []
        name = bridge_name(li, link)
        bad = name_issue(name, "name", ("links", li, "name"))
        if bad is not None:
            issues.append(bad)
        ports = {_port(ei, ep.node): ep for ei, ep in enumerate(link.endpoints)}
        if name == "lo" or name in ports:
            what = "the loopback device" if name == "lo" else f"the name of node {ports[name].node}'s port"
            issues.append(
                Issue(
                    ("links", li, "name"),
                    f"bridge name {name!r} is {what} in the bridge's own namespace (ports are named "
                    "p<endpoint index>-<node>): pick another name",
                )
            )
        taken: dict[str, int] = ctx.claimed.setdefault("bridges", {})
        if name in taken:
            issues.append(Issue(("links", li, "name"), f"bridge '{name}' is already links[{taken[name]}]"))
        taken[name] = li
        return issues

    def selectors(self, li: int, link: LinkModel) -> list[str]:
        return [bridge_name(li, link)]

    def planned_namespaces(self, lab_id: str, li: int, link: LinkModel) -> list[str]:
        return [bridge_ns_name(lab_id, bridge_name(li, link))]

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        br = bridge_name(li, rt.link(li))
        out: list[PlannedStep] = [
            (
                Phase.LINKS,
                Step(
                    f"bridge {br}",
                    functools.partial(_bridge, rt, br),
                    functools.partial(_drop_bridge, rt, br),
                ),
            )
        ]
        for end in rt.ends(li):
            where = f"bridge {br} port {end.node}:{end.name}"
            if rt.placements[li].relayed:
                step = Step(
                    f"{where} (tap pair with a relay)",
                    functools.partial(_tap_port, rt, li, br, end),
                    functools.partial(_close_port, rt, li, br, end),
                )
            elif rt.in_guest(end):
                step = Step(f"{where} (TAP to a VM)", functools.partial(_guest_port, rt, br, end))
            else:
                step = Step(where, functools.partial(_veth_port, rt, br, end))
            out.append((Phase.LINKS, step))
        return out + wiring.kernel_impair_steps(rt, li)

    def kernel_targets(self, rt: Runtime, li: int) -> list[KernelTarget]:
        bridge_ns = rt.bridges[bridge_name(li, rt.link(li))]
        out: list[KernelTarget] = []
        for end in rt.ends(li):
            out.append((rt.netns(end.node), end.name, A_TO_B))
            out.append((bridge_ns, port_name(end), B_TO_A))
        return out

    def mermaid(self, li: int, link: LinkModel, label: Any) -> list[str]:
        br = bridge_name(li, link)
        lines = [f'  {br}{{{{"{br} (bridge)"}}}}']
        lines += [f'  {ep.node} ---|"{label(ep.node, ep.interface)}"| {br}' for ep in link.endpoints]
        return lines

    def dot(self, li: int, link: LinkModel, quote: Any, label_attr: str) -> list[str]:
        br = bridge_name(li, link)
        lines = [
            f'  {quote(br)} [shape=ellipse, fillcolor="#fdf3e1", label={quote(br + chr(10) + "(bridge)")}];'
        ]
        lines += [
            f"  {quote(ep.node)} -- {quote(br)} [label={quote(ep.interface)}];" for ep in link.endpoints
        ]
        return lines

    def describe(self, link: dict[str, Any]) -> dict[str, Any]:
        return {**super().describe(link), "bridge": link.get("name")}


def _bridge(rt: Runtime, br: str) -> None:
    ns = NetNamespace.create(bridge_ns_name(rt.lab_id, br))
    rt.bridges[br] = ns
    ipr = rt.ipr(ns)
    ipr.link("add", ifname=br, kind="bridge")
    ipr.link("set", index=rt.index(ns, br), state="up")


def _drop_bridge(rt: Runtime, br: str) -> None:
    ns = rt.bridges.pop(br, None)
    rt.close_netlink()
    if ns is not None:
        ns.delete()


def _enslave(rt: Runtime, br: str, port: str, end: Iface) -> None:
    """Put a port on the bridge, up, with the end's MTU."""
    sw = rt.bridges[br]
    kwargs: dict[str, Any] = {"master": rt.index(sw, br), "state": "up"}
    if end.settings.mtu is not None:
        kwargs["mtu"] = end.settings.mtu
    rt.ipr(sw).link("set", index=rt.index(sw, port), **kwargs)


def _veth_port(rt: Runtime, br: str, end: Iface) -> None:
    port = port_name(end)
    rt.ipr(rt.bridges[br]).link(
        "add", ifname=port, kind="veth", peer={"ifname": end.name, "net_ns_fd": rt.netns(end.node).path}
    )
    _enslave(rt, br, port, end)


def _guest_port(rt: Runtime, br: str, end: Iface) -> None:
    port = port_name(end)
    wiring.guest_taps(rt, rt.bridges[br], port, end)
    _enslave(rt, br, port, end)


def _tap_port(rt: Runtime, li: int, br: str, end: Iface) -> None:
    """A bridge port as a TAP pair: one end in the node, one on the bridge, a relay between
    (a_to_b: node -> bridge)."""
    node_side = wiring.relay_end(rt, li, end)
    rt.devices[(end.node, end.name)] = node_side
    port = port_name(end)
    bridge_side = wiring.tap(rt.bridges[br], port)
    rt.devices[(f"bridge:{br}", port)] = bridge_side
    _enslave(rt, br, port, end)
    assert end.endpoint_index is not None
    key = (li, end.endpoint_index)
    wiring.start_relay(rt, key, node_side, bridge_side, wiring.impair_of(rt, key), f"bridge-{li}-{key[1]}")


def _close_port(rt: Runtime, li: int, br: str, end: Iface) -> None:
    wiring.stop_relays(rt, li, [end.endpoint_index if end.endpoint_index is not None else -1])
    wiring.close_devices(rt, [(end.node, end.name), (f"bridge:{br}", port_name(end))])
