"""Cross-reference rules a schema cannot express; each problem carries its field path."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tunlab.devices.config import check_name
from tunlab.topologies.drivers import driver_for
from tunlab.topologies.fieldpath import format_path
from tunlab.topologies.models import Endpoint, InterfaceSettings, Link, Topology


@dataclass(frozen=True)
class Issue:
    loc: tuple[Any, ...]
    message: str


@dataclass
class Iface:
    """An interface the lab will create, wherever it was declared."""

    node: str
    name: str
    loc: tuple[Any, ...]
    settings: InterfaceSettings
    link_index: int | None = None  # None: a tun/tap declared under the node
    endpoint_index: int | None = None
    link_type: str | None = None

    @property
    def kind(self) -> str:
        return self.settings.type or (self.link_type or "veth")

    @property
    def addresses(self) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        return [*self.settings.ipv4, *self.settings.ipv6]


@dataclass
class Catalog:
    """Every interface of the lab, keyed by (node, interface)."""

    ifaces: dict[tuple[str, str], Iface] = field(default_factory=dict)

    def of_node(self, node: str) -> list[Iface]:
        return [i for (n, _), i in self.ifaces.items() if n == node]


def endpoint_settings(topo: Topology, link: Link, ep: Endpoint) -> InterfaceSettings:
    """A link end's settings: the node's interfaces entry, the link's MTU, then the endpoint."""
    node = topo.nodes.get(ep.node)
    base = InterfaceSettings()
    if link.mtu is not None:
        base = InterfaceSettings(mtu=link.mtu)
    if node is not None and ep.interface in node.interfaces:
        base = base.merged_with(node.interfaces[ep.interface])
    own = InterfaceSettings.model_validate(
        ep.model_dump(exclude_unset=True, exclude={"node", "interface", "underlay", "remote"})
    )
    return base.merged_with(own)


def catalog(topo: Topology, issues: list[Issue] | None = None) -> Catalog:
    """Collect interfaces from links and from nodes' tun/tap entries, noting problems."""
    problems = issues if issues is not None else []
    cat = Catalog()
    for li, link in enumerate(topo.links):
        for ei, ep in enumerate(link.endpoints):
            loc = ("links", li, "endpoints", ei)
            if ep.node not in topo.nodes:
                known = ", ".join(sorted(topo.nodes)) or "none"
                problems.append(Issue(loc, f"node '{ep.node}' is not defined (nodes: {known})"))
                continue
            bad = _name_issue(ep.interface, "interface", (*loc, "interface"))
            if bad is not None:
                problems.append(bad)
                continue
            key = (ep.node, ep.interface)
            if key in cat.ifaces:
                first = cat.ifaces[key]
                where = format_path(first.loc)
                problems.append(
                    Issue(loc, f"interface '{ep.node}:{ep.interface}' is already used by {where}")
                )
                continue
            declared = topo.nodes[ep.node].interfaces.get(ep.interface)
            if declared is not None and declared.type is not None:
                problems.append(
                    Issue(
                        loc,
                        f"'{ep.node}:{ep.interface}' is declared as a {declared.type} device under "
                        f"nodes.{ep.node}.interfaces; a link makes its own interface: use another name",
                    )
                )
                continue
            if ep.type is not None:
                problems.append(
                    Issue((*loc, "type"), "tun/tap devices are declared under nodes.<node>.interfaces")
                )
                continue
            settings = endpoint_settings(topo, link, ep)
            cat.ifaces[key] = Iface(ep.node, ep.interface, loc, settings, li, ei, link.type)
    for name, node in topo.nodes.items():
        for iface, settings in node.interfaces.items():
            nloc: tuple[Any, ...] = ("nodes", name, "interfaces", iface)
            bad = _name_issue(iface, "interface", nloc)
            if bad is not None:
                problems.append(bad)
                continue
            if (name, iface) in cat.ifaces:
                continue  # settings for a link end
            if settings.type is None:
                problems.append(
                    Issue(
                        nloc,
                        "this interface is not connected by any link and has no type (tun or tap)",
                    )
                )
                continue
            cat.ifaces[(name, iface)] = Iface(name, iface, nloc, settings)
    return cat


def _name_issue(name: str, option: str, loc: tuple[Any, ...]) -> Issue | None:
    """An interface-name problem at loc (the message without check_name's option prefix)."""
    try:
        check_name(name, option)
    except ValueError as exc:
        return Issue(loc, str(exc).removeprefix(f"{option}: "))
    if option == "interface" and name == "lo":
        return Issue(loc, "'lo' is the loopback interface every node already has: pick another name")
    return None


def _check_links(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    bridges: dict[str, int] = {}
    for li, link in enumerate(topo.links):
        loc = ("links", li)
        n = len(link.endpoints)
        if link.type in ("veth", "tun-pair", "vxlan") and n != 2:
            issues.append(Issue((*loc, "endpoints"), f"a {link.type} link has exactly 2 endpoints, not {n}"))
        if link.type == "bridge":
            if n < 1:
                issues.append(Issue((*loc, "endpoints"), "a bridge needs at least one endpoint"))
            name = link.name or f"br{li}"
            bad = _name_issue(name, "name", (*loc, "name"))
            if bad is not None:
                issues.append(bad)
            if name in bridges:
                issues.append(Issue((*loc, "name"), f"bridge '{name}' is already links[{bridges[name]}]"))
            bridges[name] = li
        if link.type == "vxlan":
            if link.vni is None:
                issues.append(Issue((*loc, "vni"), "a vxlan link needs a vni (1-16777215)"))
            for ei, ep in enumerate(link.endpoints):
                if ep.underlay is None:
                    issues.append(
                        Issue(
                            (*loc, "endpoints", ei, "underlay"),
                            "name the interface that carries the tunnel",
                        )
                    )
                elif ep.underlay == ep.interface:
                    issues.append(
                        Issue(
                            (*loc, "endpoints", ei, "underlay"),
                            f"'{ep.underlay}' is the vxlan interface itself: "
                            "name the interface that carries it",
                        )
                    )
                elif (ep.node, ep.underlay) not in cat.ifaces:
                    issues.append(
                        Issue(
                            (*loc, "endpoints", ei, "underlay"),
                            f"node '{ep.node}' has no interface '{ep.underlay}'",
                        )
                    )
            if n == 2 and not any(i.loc[:3] == (*loc, "endpoints") for i in issues[-2:]):
                for ei in (0, 1):
                    ep, other = link.endpoints[ei], link.endpoints[1 - ei]
                    if ep.remote is None and other.underlay is not None:
                        under = cat.ifaces.get((other.node, other.underlay))
                        if under is not None and not under.addresses:
                            issues.append(
                                Issue(
                                    (*loc, "endpoints", ei, "remote"),
                                    f"'{other.node}:{other.underlay}' has no address to reach: "
                                    "give it one, or set remote",
                                )
                            )
        _check_impairment(link, loc, cat, issues)
        for ei, ep in enumerate(link.endpoints):
            iface = cat.ifaces.get((ep.node, ep.interface))
            if iface is None:
                continue
            in_guest = ep.node in topo.nodes and driver_for(topo.nodes[ep.node].kind).interfaces_in_guest
            if in_guest and link.type == "vxlan":
                issues.append(
                    Issue(
                        (*loc, "endpoints", ei),
                        f"'{ep.node}' is a VM: a vxlan end would be made in its guest kernel, which tunlab "
                        "does not do; link the VM by veth or bridge and make the vxlan in a netns node",
                    )
                )
            if iface.settings.queues is not None and not in_guest:
                issues.append(
                    Issue(
                        (*loc, "endpoints", ei, "queues"), "queues is for a VM's NIC (tun/tap: multi_queue)"
                    )
                )
            if iface.settings.multi_queue is not None:
                issues.append(
                    Issue(
                        (*loc, "endpoints", ei, "multi_queue"),
                        "multi_queue is for tun/tap interfaces",
                    )
                )
            if link.type == "tun-pair" and iface.settings.offload is not None:
                issues.append(
                    Issue(
                        (*loc, "endpoints", ei, "offload"),
                        "set offload on the tun-pair link, not on its ends",
                    )
                )


def _check_impairment(link: Link, loc: tuple[Any, ...], cat: Catalog, issues: list[Issue]) -> None:
    """impair_via against the link type; a shaper's bucket must hold a full-size packet."""
    if link.impair is None:
        if link.impair_via != "auto":
            issues.append(Issue((*loc, "impair_via"), "impair_via without impair: add impair (or drop it)"))
        return
    if link.type == "tun-pair" and link.impair_via == "kernel":
        issues.append(
            Issue(
                (*loc, "impair_via"),
                "a tun-pair is impaired in its own relay: impair_via: kernel is for veth, bridge and "
                "vxlan links",
            )
        )
    imp = link.impairment
    assert imp is not None
    mtus = [
        i.settings.mtu or 1500
        for i in (cat.ifaces.get((e.node, e.interface)) for e in link.endpoints)
        if i is not None
    ]
    frame = max(mtus or [1500]) + (0 if link.type == "tun-pair" else 14)
    per_direction = not _symmetric(link)
    for key in ("a_to_b", "b_to_a"):
        shaper = getattr(imp, key).shaper
        if shaper is not None and shaper.burst < frame:
            where = (
                (*loc, "impair", key, "shaper", "burst")
                if per_direction
                else (*loc, "impair", "shaper", "burst")
            )
            issues.append(
                Issue(
                    where,
                    f"burst {shaper.burst} bytes is smaller than a full-size packet on this link "
                    f"({frame} bytes): those could never be sent; use at least {frame}",
                )
            )
            if not per_direction:
                break


def _symmetric(link: Link) -> bool:
    from tunlab.topologies.models import PerDirection

    return not isinstance(link.impair, PerDirection)


AnyInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _addresses(iface: Iface) -> list[tuple[str, int, AnyInterface]]:
    """(field, index, address) for every address of an interface."""
    out: list[tuple[str, int, AnyInterface]] = [("ipv4", i, a) for i, a in enumerate(iface.settings.ipv4)]
    out += [("ipv6", i, a) for i, a in enumerate(iface.settings.ipv6)]
    return out


def _check_addresses(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    # invalid host addresses
    for iface in cat.ifaces.values():
        for fam, ai, addr in _addresses(iface):
            net = addr.network
            loc = (*iface.loc, fam, ai)
            if (
                addr.version == 4
                and net.prefixlen < 31
                and addr.ip in (net.network_address, net.broadcast_address)
            ):
                what = "network" if addr.ip == net.network_address else "broadcast"
                issues.append(Issue(loc, f"{addr} is the {what} address of {net}: pick a host address"))
            if addr.ip.is_multicast or addr.ip.is_unspecified:
                issues.append(Issue(loc, f"{addr.ip} cannot be an interface address"))
        if iface.settings.mac is not None and iface.settings.type == "tun":
            issues.append(Issue((*iface.loc, "mac"), "a tun (L3) device has no MAC: use type: tap"))
    # overlaps on one segment (one link), and on one node
    segments: dict[int, list[Iface]] = {}
    for iface in cat.ifaces.values():
        if iface.link_index is not None:
            segments.setdefault(iface.link_index, []).append(iface)
    for members in segments.values():
        seen: dict[Any, Iface] = {}
        for iface in members:
            for fam, ai, addr in _addresses(iface):
                if addr.ip in seen:
                    other = seen[addr.ip]
                    issues.append(
                        Issue(
                            (*iface.loc, fam, ai),
                            f"address {addr.ip} is also on {other.node}:{other.name} on this link",
                        )
                    )
                seen[addr.ip] = iface
    for node in topo.nodes:
        mine = [(i, a) for i in cat.of_node(node) for a in i.addresses]
        for x, (ia, aa) in enumerate(mine):
            for ib, ab in mine[x + 1 :]:
                if ia is ib or aa.version != ab.version:
                    continue
                if aa.ip == ab.ip:
                    issues.append(Issue(ib.loc, f"address {ab.ip} is also on {node}:{ia.name}"))
                elif (
                    aa.network.overlaps(ab.network)
                    and aa.network.prefixlen < 32
                    and ab.network.prefixlen < 32
                ):
                    if aa.version == 6 and (aa.ip.is_link_local or ab.ip.is_link_local):
                        continue
                    issues.append(
                        Issue(
                            ib.loc,
                            f"{ab} on {ib.name} overlaps {aa} on {ia.name} in node '{node}': "
                            "routing would be ambiguous",
                        )
                    )


def _check_nodes(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    nodes = topo.resolved_nodes()
    for name, node in nodes.items():
        loc = ("nodes", name)
        issues.extend(Issue((*loc, *sub), message) for sub, message in driver_for(node.kind).check(node))
        names = {i.name for i in cat.of_node(name)}
        connected = [a for i in cat.of_node(name) for a in i.addresses]
        for ri, route in enumerate(node.routes):
            rloc = (*loc, "routes", ri)
            try:
                dst = route.network()
            except ValueError as exc:
                issues.append(Issue((*rloc, "dst"), str(exc)))
                continue
            if route.dev is not None and route.dev not in names and route.dev != "lo":
                issues.append(Issue((*rloc, "dev"), f"node '{name}' has no interface '{route.dev}'"))
            if route.via is not None:
                if route.via.version != dst.version:
                    issues.append(
                        Issue(
                            (*rloc, "via"),
                            f"next hop {route.via} and destination {dst} are different IP versions",
                        )
                    )
                    continue
                on_link = [a for a in connected if a.version == route.via.version and route.via in a.network]
                if route.dev is not None:
                    on_link = [
                        a
                        for i in cat.of_node(name)
                        if i.name == route.dev
                        for a in i.addresses
                        if route.via in a.network
                    ]
                if not on_link and not (route.via.version == 6 and route.via.is_link_local):
                    issues.append(
                        Issue(
                            (*rloc, "via"),
                            f"next hop {route.via} is on no segment connected to '{name}'",
                        )
                    )
                elif any(a.ip == route.via for a in on_link):
                    issues.append(
                        Issue((*rloc, "via"), f"next hop {route.via} is an address of '{name}' itself")
                    )


def check_topology(topo: Topology) -> list[Issue]:
    issues: list[Issue] = []
    cat = catalog(topo, issues)
    _check_links(topo, cat, issues)
    _check_addresses(topo, cat, issues)
    _check_nodes(topo, cat, issues)
    return issues
