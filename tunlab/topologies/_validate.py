"""Cross-reference rules a schema cannot express; each problem carries its field path."""

from __future__ import annotations

import ipaddress
from typing import Any

from tunlab.relay._direction import DIRECTIONS
from tunlab.topologies._catalog import Catalog, Iface, Issue, catalog
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._fields import PerDirection
from tunlab.topologies._links import CheckContext, LinkModel, link_type
from tunlab.topologies._models import Topology

__all__ = ["Catalog", "Iface", "Issue", "catalog", "check_topology"]


def _check_links(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    in_guest = {name: driver_for(node.kind).interfaces_in_guest for name, node in topo.nodes.items()}
    ctx = CheckContext(topo, cat, in_guest)
    for li, link in enumerate(topo.links):
        loc = ("links", li)
        kind = link_type(link.type)
        n, (least, most) = len(link.endpoints), kind.endpoints
        if least == most and n != least:
            issues.append(
                Issue((*loc, "endpoints"), f"a {kind.name} link has exactly {least} endpoints, not {n}")
            )
        elif n < least or (most is not None and n > most):
            bounds = f"at least {least}" + (f" and at most {most}" if most is not None else "")
            issues.append(Issue((*loc, "endpoints"), f"a {kind.name} needs {bounds} endpoints, not {n}"))
        issues += kind.check(ctx, li, link)
        _check_impairment(link, loc, cat, issues)
        for ei, ep in enumerate(link.endpoints):
            iface = cat.ifaces.get((ep.node, ep.interface))
            if iface is None:
                continue
            issues += kind.check_end(ctx, li, ei, iface)
            if iface.settings.queues is not None and not in_guest.get(ep.node):
                issues.append(
                    Issue(
                        (*loc, "endpoints", ei, "queues"), "queues is for a VM's NIC (tun/tap: multi_queue)"
                    )
                )
            if iface.settings.multi_queue is not None:
                issues.append(
                    Issue((*loc, "endpoints", ei, "multi_queue"), "multi_queue is for tun/tap interfaces")
                )


def _check_impairment(link: LinkModel, loc: tuple[Any, ...], cat: Catalog, issues: list[Issue]) -> None:
    """impair_via without impair; a shaper's bucket must hold a full-size packet."""
    if link.impair is None:
        if link.impair_via != "auto":
            issues.append(Issue((*loc, "impair_via"), "impair_via without impair: add impair (or drop it)"))
        return
    imp = link.impairment
    assert imp is not None
    mtus = [
        i.settings.mtu or 1500
        for i in (cat.ifaces.get((e.node, e.interface)) for e in link.endpoints)
        if i is not None
    ]
    frame = max(mtus or [1500]) + (14 if link_type(link.type).l2 else 0)
    per_direction = isinstance(link.impair, PerDirection)
    for key in DIRECTIONS:
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
