"""Cross-reference rules a schema cannot express; each problem carries its field path."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from tunlab.relay._direction import DIRECTIONS
from tunlab.topologies._catalog import Catalog, Iface, Issue, catalog
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._fields import PerDirection
from tunlab.topologies._links import CheckContext, LinkModel, link_type
from tunlab.topologies._models import Topology
from tunlab.topologies._sysctl_check import sysctl_issue

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


def _host_address_problem(addr: AnyInterface) -> str | None:
    """Why addr cannot be an interface's address, or None (in integers: ipaddress's properties
    cost ~10 us each, 20,000 addresses in a big lab)."""
    ip, prefix = int(addr), addr.network.prefixlen
    if addr.version == 4:
        host_bits = 32 - prefix
        if prefix < 31 and ip & ((1 << host_bits) - 1) in (0, (1 << host_bits) - 1):
            what = "network" if ip & ((1 << host_bits) - 1) == 0 else "broadcast"
            return f"{addr} is the {what} address of {addr.network}: pick a host address"
        if ip >> 28 == 0xE or ip == 0:  # 224.0.0.0/4, 0.0.0.0
            return f"{addr.ip} cannot be an interface address"
        return None
    if ip >> 120 == 0xFF or ip == 0:  # ff00::/8, ::
        return f"{addr.ip} cannot be an interface address"
    return None


@functools.lru_cache(maxsize=65536)
def _span(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    """(version, first, last) of a network as integers: containment, overlap and broadcast
    without the ipaddress objects each comparison would build."""
    first = int(net.network_address)
    return net.version, first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


def _holds(net: Any, addr: Any) -> bool:
    version, first, last = _span(net)
    return addr.version == version and first <= int(addr) <= last


def _check_addresses(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    # invalid host addresses
    for iface in cat.ifaces.values():
        for fam, ai, addr in _addresses(iface):
            problem = _host_address_problem(addr)
            if problem is not None:
                issues.append(Issue((*iface.where(fam), ai), problem))
        if iface.settings.mac is not None and iface.settings.type == "tun":
            issues.append(Issue(iface.where("mac"), "a tun (L3) device has no MAC: use type: tap"))
    # overlaps on one segment (one link), and on one node
    segments: dict[int, list[Iface]] = {}
    for iface in cat.ifaces.values():
        if iface.link_index is not None:
            segments.setdefault(iface.link_index, []).append(iface)
    for members in segments.values():
        seen: dict[tuple[int, int], Iface] = {}
        for iface in members:
            for fam, ai, addr in _addresses(iface):
                key = (addr.version, int(addr))
                if key in seen:
                    other = seen[key]
                    issues.append(
                        Issue(
                            (*iface.where(fam), ai),
                            f"address {addr.ip} is also on {other.node}:{other.name} on this link",
                        )
                    )
                seen[key] = iface
    for node in topo.nodes:
        mine = [(i, a) for i in cat.of_node(node) for a in i.addresses]
        for x, (ia, aa) in enumerate(mine):
            for ib, ab in mine[x + 1 :]:
                if ia is ib or aa.version != ab.version:
                    continue
                if int(aa) == int(ab):
                    where = ib.where("ipv4" if ab.version == 4 else "ipv6")
                    issues.append(Issue(where, f"address {ab.ip} is also on {node}:{ia.name}"))
                elif (
                    aa.network.prefixlen < 32
                    and ab.network.prefixlen < 32
                    and _overlap(aa.network, ab.network)
                ):
                    if aa.version == 6 and (aa.ip.is_link_local or ab.ip.is_link_local):
                        continue
                    issues.append(
                        Issue(
                            ib.where("ipv4" if ab.version == 4 else "ipv6"),
                            f"{ab} on {ib.name} overlaps {aa} on {ia.name} in node '{node}': "
                            "routing would be ambiguous",
                        )
                    )


def _overlap(a: Any, b: Any) -> bool:
    _, a_first, a_last = _span(a)
    _, b_first, b_last = _span(b)
    return a_first <= b_last and b_first <= a_last


def _check_nodes(topo: Topology, cat: Catalog, issues: list[Issue]) -> None:
    nodes = topo.resolved_nodes()
    for name, node in nodes.items():
        loc = ("nodes", name)
        issues.extend(Issue((*loc, *sub), message) for sub, message in driver_for(node.kind).check(node))
        ifaces = cat.of_node(name)
        names = {i.name for i in ifaces}
        connected = [a for i in ifaces for a in i.addresses]
        for ri, route in enumerate(node.routes):
            issues += _route_issues(name, (*loc, "routes", ri), route, ifaces, names, connected)
        issues += _duplicate_routes(loc, node.routes)
        in_guest = driver_for(node.kind).interfaces_in_guest
        for key, value in node.sysctls.items():
            problem = sysctl_issue(key, value, names, name, in_guest=in_guest)
            if problem is not None:
                issues.append(Issue((*loc, "sysctls", key), problem))


def _duplicate_routes(loc: tuple[Any, ...], routes: list[Any]) -> list[Issue]:
    """Routes the kernel holds one of: one per destination and metric, whatever the next hop
    (a second is EEXIST, tried on this kernel for IPv4 and IPv6 alike)."""
    seen: dict[tuple[Any, ...], int] = {}
    issues = []
    for ri, route in enumerate(routes):
        try:
            dst = route.network()
        except ValueError:
            continue  # reported by _route_issues
        key = (dst, route.metric or 0)
        first = seen.setdefault(key, ri)
        if first != ri:
            issues.append(
                Issue(
                    (*loc, "routes", ri),
                    f"the same destination and metric as routes[{first}] ({dst}): the kernel keeps one "
                    "route per destination and metric; "
                    "remove this one or give it another metric",
                )
            )
    return issues


def _route_issues(
    name: str, rloc: tuple[Any, ...], route: Any, ifaces: list[Any], names: set[str], connected: list[Any]
) -> list[Issue]:
    """What the kernel would refuse of one route of node `name` (checked as rtnetlink would)."""
    try:
        dst = route.network()
    except ValueError as exc:
        return [Issue((*rloc, "dst"), str(exc))]
    issues = []
    if route.dev is not None and route.dev not in names and route.dev != "lo":
        issues.append(Issue((*rloc, "dev"), f"node '{name}' has no interface '{route.dev}'"))
    own = [
        a
        for a in connected
        if a.version == dst.version and a.network == dst and a.network.prefixlen < a.max_prefixlen
    ]
    if own and dst.version == 4 and not route.metric:
        issues.append(
            Issue(
                (*rloc, "dst"),
                f"{dst} is a subnet connected to '{name}' ({own[0]}): the kernel's own route to it "
                "exists already (add a metric to add a second one, or leave the route out)",
            )
        )
    if route.via is None:
        return issues
    if route.via.version != dst.version:
        return [
            *issues,
            Issue((*rloc, "via"), f"next hop {route.via} and destination {dst} are different IP versions"),
        ]
    if route.via.version == 6 and route.via.is_link_local:
        if route.dev is None:
            issues.append(
                Issue(
                    (*rloc, "dev"),
                    f"next hop {route.via} is link-local: say which interface (dev: ...) it is on",
                )
            )
        return issues
    via = int(route.via)
    on_link = [a for a in connected if _holds(a.network, route.via)]
    if route.dev is not None:
        on_link = [
            a for i in ifaces if i.name == route.dev for a in i.addresses if _holds(a.network, route.via)
        ]
    if not on_link:
        issues.append(Issue((*rloc, "via"), f"next hop {route.via} is on no segment connected to '{name}'"))
    elif any(int(a) == via for a in on_link):
        issues.append(Issue((*rloc, "via"), f"next hop {route.via} is an address of '{name}' itself"))
    elif route.via.version == 4 and any(
        via == _span(a.network)[2] and a.network.prefixlen < 31 for a in on_link
    ):
        issues.append(
            Issue((*rloc, "via"), f"next hop {route.via} is the broadcast address of {on_link[0].network}")
        )
    return issues


def check_topology(topo: Topology) -> list[Issue]:
    issues: list[Issue] = []
    cat = catalog(topo, issues)
    _check_links(topo, cat, issues)
    _check_addresses(topo, cat, issues)
    _check_nodes(topo, cat, issues)
    return issues
