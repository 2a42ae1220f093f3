"""Cross-reference rules a schema cannot express; each problem carries its field path."""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

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


class _Addr(NamedTuple):
    """An interface address as integers, made once per address: every containment, overlap and
    equality check below compares these instead of building and hashing ipaddress objects
    (their __eq__ and __hash__ are Python code: most of the checks' time at 10,000 nodes)."""

    iface: Iface
    address: AnyInterface
    version: int
    ip: int
    first: int  # of its network
    last: int
    prefixlen: int
    bits: int  # 32 or 128


def _addr(iface: Iface, address: AnyInterface) -> _Addr:
    v4 = isinstance(address, ipaddress.IPv4Interface)
    bits, prefixlen, ip = (32 if v4 else 128), address.network.prefixlen, int(address)
    host = (1 << (bits - prefixlen)) - 1
    return _Addr(iface, address, 4 if v4 else 6, ip, ip & ~host, (ip & ~host) | host, prefixlen, bits)


def _addrs(ifaces: list[Iface]) -> list[_Addr]:
    return [_addr(i, a) for i in ifaces for a in i.addresses]


def _span(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    """(version, first, last) of a network as integers."""
    first = int(net.network_address)
    return net.version, first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


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


def _check_addresses(cat: Catalog, by_node: dict[str, list[_Addr]], issues: list[Issue]) -> None:
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
    for node, mine in by_node.items():
        _check_node_overlaps(node, mine, issues)


def _check_node_overlaps(node: str, mine: list[_Addr], issues: list[Issue]) -> None:
    """Two addresses of one node that are the same, or whose networks overlap (host addresses,
    /32 and /128, may be on several interfaces; IPv6 link-local ones are per interface)."""
    for x, a in enumerate(mine):
        for b in mine[x + 1 :]:
            if a.iface is b.iface or a.version != b.version:
                continue
            where = b.iface.where("ipv4" if b.version == 4 else "ipv6")
            if a.ip == b.ip:
                issues.append(Issue(where, f"address {b.address.ip} is also on {node}:{a.iface.name}"))
            elif a.prefixlen < a.bits and b.prefixlen < b.bits and a.first <= b.last and b.first <= a.last:
                if a.version == 6 and (a.address.ip.is_link_local or b.address.ip.is_link_local):
                    continue
                issues.append(
                    Issue(
                        where,
                        f"{b.address} on {b.iface.name} overlaps {a.address} on {a.iface.name} in node "
                        f"'{node}': routing would be ambiguous",
                    )
                )


def _check_nodes(topo: Topology, cat: Catalog, by_node: dict[str, list[_Addr]], issues: list[Issue]) -> None:
    nodes = topo.resolved_nodes()
    for name, node in nodes.items():
        loc = ("nodes", name)
        issues.extend(Issue((*loc, *sub), message) for sub, message in driver_for(node.kind).check(node))
        ifaces = cat.of_node(name)
        names = {i.name for i in ifaces}
        for ri, route in enumerate(node.routes):
            issues += _route_issues(name, (*loc, "routes", ri), route, names, by_node[name])
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
        first = seen.setdefault((_span(dst), route.metric or 0), ri)
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
    name: str, rloc: tuple[Any, ...], route: Any, names: set[str], connected: list[_Addr]
) -> list[Issue]:
    """What the kernel would refuse of one route of node `name` (checked as rtnetlink would)."""
    try:
        dst = route.network()
    except ValueError as exc:
        return [Issue((*rloc, "dst"), str(exc))]
    issues = []
    if route.dev is not None and route.dev not in names and route.dev != "lo":
        issues.append(Issue((*rloc, "dev"), f"node '{name}' has no interface '{route.dev}'"))
    span = _span(dst)
    own = [a for a in connected if (a.version, a.first, a.last) == span and a.prefixlen < a.bits]
    if own and dst.version == 4 and not route.metric:
        issues.append(
            Issue(
                (*rloc, "dst"),
                f"{dst} is a subnet connected to '{name}' ({own[0].address}): the kernel's own route "
                "to it exists already (add a metric to add a second one, or leave the route out)",
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
    via, version = int(route.via), span[0]
    on_link = [
        a
        for a in connected
        if a.version == version and a.first <= via <= a.last and route.dev in (None, a.iface.name)
    ]
    if not on_link:
        issues.append(Issue((*rloc, "via"), f"next hop {route.via} is on no segment connected to '{name}'"))
    elif any(a.ip == via for a in on_link):
        issues.append(Issue((*rloc, "via"), f"next hop {route.via} is an address of '{name}' itself"))
    elif version == 4 and any(via == a.last and a.prefixlen < 31 for a in on_link):
        issues.append(
            Issue(
                (*rloc, "via"),
                f"next hop {route.via} is the broadcast address of {on_link[0].address.network}",
            )
        )
    return issues


def check_topology(topo: Topology) -> list[Issue]:
    issues: list[Issue] = []
    cat = catalog(topo, issues)
    _check_links(topo, cat, issues)
    by_node = {node: _addrs(cat.of_node(node)) for node in topo.nodes}  # made once, read twice
    _check_addresses(cat, by_node, issues)
    _check_nodes(topo, cat, by_node, issues)
    return issues
