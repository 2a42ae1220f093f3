"""type: vxlan — a VXLAN tunnel between two nodes over interfaces they already have.

The vxlan devices are made once their underlay interfaces are configured. Impaired where the
kernel cannot do it, each end is the vxlan device (a hidden name) and a TAP on a bridge in the
node, with a relay to the TAP the node sees under the link's name (a_to_b leaves end 0).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from tunlab.relay._direction import Direction
from tunlab.relay.impair._model import LinkImpairment
from tunlab.relay.impair._params import NetemParams
from tunlab.topologies._catalog import Iface, Issue
from tunlab.topologies._fields import Endpoint, brief_endpoint
from tunlab.topologies._interfaces import configure
from tunlab.topologies._links import wiring
from tunlab.topologies._links.base import A_TO_B, B_TO_A, CheckContext, LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step


class VxlanEndpoint(Endpoint):
    """A vxlan end: the interface that carries the tunnel, and the peer to send to."""

    underlay: str | None = Field(None, description="the interface that carries the tunnel")
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None = Field(
        None, description="the peer's underlay address (default: the other end's)"
    )


class VxlanLink(LinkModel):
    """A VXLAN tunnel: vni, UDP port, and an underlay interface at each end."""

    type: Literal["vxlan"]
    endpoints: list[Annotated[VxlanEndpoint, BeforeValidator(brief_endpoint)]]  # type: ignore[assignment]
    vni: int | None = Field(None, ge=1, le=16777215, description="network identifier")
    port: int = Field(4789, ge=1, le=65535, description="UDP port")


def shim_names(li: int, ei: int) -> tuple[str, str, str]:
    """(vxlan device, bridge, relay-side TAP) a relayed vxlan end is made of, in its node."""
    return f"tlx{li}v{ei}", f"tlx{li}b{ei}", f"tlx{li}r{ei}"


class Vxlan(LinkType):
    name = "vxlan"
    model = VxlanLink
    rank = 30
    graph_style = "dashed"
    mermaid_arrow = "-.-"

    def check(self, ctx: CheckContext, li: int, link: LinkModel) -> list[Issue]:
        assert isinstance(link, VxlanLink)
        loc = ("links", li)
        issues = []
        if link.vni is None:
            issues.append(Issue((*loc, "vni"), "a vxlan link needs a vni (1-16777215)"))
        underlay_ok = True
        for ei, ep in enumerate(link.endpoints):
            problem = _underlay_issue(ctx, ep)
            if problem is not None:
                issues.append(Issue((*loc, "endpoints", ei, "underlay"), problem))
                underlay_ok = False
        if len(link.endpoints) == 2 and underlay_ok:
            for ei in (0, 1):
                ep, other = link.endpoints[ei], link.endpoints[1 - ei]
                under = ctx.catalog.ifaces.get((other.node, other.underlay or ""))
                if ep.remote is None and under is not None and not under.addresses:
                    issues.append(
                        Issue(
                            (*loc, "endpoints", ei, "remote"),
                            f"'{other.node}:{other.underlay}' has no address to reach: "
                            "give it one, or set remote",
                        )
                    )
            issues += _identity_issues(ctx, li, link)
        return issues

    def check_end(self, ctx: CheckContext, li: int, ei: int, iface: Iface) -> list[Issue]:
        if ctx.in_guest.get(iface.node):
            return [
                Issue(
                    ("links", li, "endpoints", ei),
                    f"'{iface.node}' is a VM: a vxlan end would be made in its guest kernel, which tunlab "
                    "does not do; link the VM by veth or bridge and make the vxlan in a netns node",
                )
            ]
        return []

    def configured_by_netlink(self, rt: Runtime, end: Iface) -> bool:
        return False  # after its tunnel exists, which needs the underlay configured first

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        ends, label = rt.ends(li), rt.label(li)
        if rt.placements[li].relayed:
            make = Step(
                f"vxlan {label} (with a relay for the impairment)",
                functools.partial(_vxlan_relayed, rt, li, ends),
                functools.partial(close_relayed, rt, li, ends),
            )
        else:
            make = Step(f"vxlan {label}", functools.partial(_vxlan, rt, li, ends))
        out: list[PlannedStep] = [(Phase.OVERLAYS, make)]
        for end in ends:
            out.append(
                (
                    Phase.OVERLAYS,
                    Step(
                        f"configure {end.node}:{end.name}", functools.partial(configure, rt, end.node, [end])
                    ),
                )
            )
        return out + wiring.kernel_impair_steps(rt, li)

    def relay_impairment(self, key: tuple[int, int], imp: LinkImpairment) -> dict[Direction, NetemParams]:
        """An end's relay carries what leaves the node (its a_to_b: node -> tunnel)."""
        outgoing = (imp.a_to_b if key[1] == 0 else imp.b_to_a).params()
        return {A_TO_B: outgoing, B_TO_A: NetemParams()}

    def relay_directions(self, key: tuple[int, int]) -> list[tuple[Direction, Direction]]:
        return [(A_TO_B, A_TO_B if key[1] == 0 else B_TO_A)]

    def edge_label(self, link: LinkModel) -> str:
        assert isinstance(link, VxlanLink)
        return f"{self.name} vni {link.vni}"

    def describe(self, link: dict[str, Any]) -> dict[str, Any]:
        return {**super().describe(link), "vni": link.get("vni"), "port": link.get("port")}


def _identity_issues(ctx: CheckContext, li: int, link: VxlanLink) -> list[Issue]:
    """The kernel allows one vxlan device per (vni, UDP port, underlay device, family) in a
    namespace: a second link with the same identity at a node would fail with EEXIST at up."""
    taken: dict[tuple[Any, ...], int] = ctx.claimed.setdefault("vxlan", {})
    issues = []
    for ei in (0, 1):
        ep, other = link.endpoints[ei], link.endpoints[1 - ei]
        remote = ep.remote
        if remote is None:
            under = ctx.catalog.ifaces.get((other.node, other.underlay or ""))
            remote = under.addresses[0] if under is not None and under.addresses else None
        family = remote.version if remote is not None else 4
        key = (ep.node, link.vni, link.port, ep.underlay, family)
        first = taken.get(key)
        if first is not None and first != li:
            issues.append(
                Issue(
                    ("links", li, "vni"),
                    f"vni {link.vni} on UDP port {link.port} over {ep.node}:{ep.underlay} is already "
                    f"links[{first}]'s: the kernel allows one such vxlan device per node; "
                    "give this link another vni or port",
                )
            )
        taken.setdefault(key, li)
    return issues


def _underlay_issue(ctx: CheckContext, ep: VxlanEndpoint) -> str | None:
    if ep.underlay is None:
        return "name the interface that carries the tunnel"
    if ep.underlay == ep.interface:
        return f"'{ep.underlay}' is the vxlan interface itself: name the interface that carries it"
    if (ep.node, ep.underlay) not in ctx.catalog.ifaces:
        return f"node '{ep.node}' has no interface '{ep.underlay}'"
    return None


def _vxlan(rt: Runtime, li: int, ends: list[Iface], names: list[str] | None = None) -> None:
    """The vxlan device of each end (named names[i], default the end's own name)."""
    link = rt.link(li)
    assert isinstance(link, VxlanLink)
    for i, end in enumerate(ends):
        ep, other_ep = link.endpoints[i], link.endpoints[1 - i]
        assert ep.underlay is not None
        assert other_ep.underlay is not None
        ns = rt.netns(end.node)
        under = rt.catalog.ifaces[(end.node, ep.underlay)]
        remote = ep.remote
        if remote is None:
            remote = rt.catalog.ifaces[(other_ep.node, other_ep.underlay)].addresses[0].ip
        local = next((a.ip for a in under.addresses if a.version == remote.version), None)
        kwargs: dict[str, Any] = {
            "ifname": names[i] if names else end.name,
            "kind": "vxlan",
            "vxlan_id": link.vni,
            "vxlan_port": link.port,
            "vxlan_link": rt.index(ns, ep.underlay),
        }
        six = "6" if remote.version == 6 else ""
        kwargs[f"vxlan_group{six}"] = str(remote)
        if local is not None:
            kwargs[f"vxlan_local{six}"] = str(local)
        rt.ipr(ns).link("add", **kwargs)


def _vxlan_relayed(rt: Runtime, li: int, ends: list[Iface]) -> None:
    _vxlan(rt, li, ends, [shim_names(li, i)[0] for i in range(len(ends))])
    for i, end in enumerate(ends):
        relay_shim(rt, li, i, end)


def relay_shim(rt: Runtime, li: int, i: int, end: Iface) -> None:
    """A relay in place of a vxlan end (made under its hidden name): the vxlan device and a
    TAP on a bridge in the node, relayed to the TAP the node sees as the end (what leaves the
    node is the relay's a_to_b)."""
    ns = rt.netns(end.node)
    vx, br, side = shim_names(li, i)
    ipr = rt.ipr(ns)
    ipr.link("add", ifname=br, kind="bridge")
    relay_side = wiring.tap(ns, side)
    rt.devices[(end.node, side)] = relay_side
    node_side = wiring.tap(ns, end.name)
    rt.devices[(end.node, end.name)] = node_side
    mtu = ipr.get_links(rt.index(ns, vx))[0].get_attr("IFLA_MTU")
    for dev in (vx, side):
        ipr.link("set", index=rt.index(ns, dev), master=rt.index(ns, br), state="up", mtu=mtu)
    ipr.link("set", index=rt.index(ns, br), state="up")
    if end.settings.mtu is None:
        ipr.link("set", index=rt.index(ns, end.name), mtu=mtu)
    key = (li, i)
    wiring.start_relay(rt, key, node_side, relay_side, wiring.impair_of(rt, key), f"vxlan-{li}-{i}")


def close_relayed(rt: Runtime, li: int, ends: list[Iface]) -> None:
    for i, end in enumerate(ends):
        wiring.stop_relays(rt, li, [i])
        wiring.close_devices(rt, [(end.node, end.name), (end.node, shim_names(li, i)[2])])
