"""Every interface a lab will make, wherever it was declared (a link's end or a node's own
tun/tap), with its merged settings and where it was declared (for messages)."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from tunlab.devices._config import check_name
from tunlab.topologies._fieldpath import format_path
from tunlab.topologies._fields import Endpoint, InterfaceSettings, LinkModel, TopologyShape


@dataclass(frozen=True)
class Issue:
    """A problem `validate` reports: the field path and what to do."""

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
    declared_at: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # field -> where it was set

    def where(self, name: str) -> tuple[Any, ...]:
        """The field path of this interface's setting `name` (ipv4, mtu, ...): the link end that
        set it, or the node's interfaces entry it came from."""
        return (*self.declared_at.get(name, self.loc), name)

    @property
    def kind(self) -> str:
        """tun or tap (a node's own device), else the type of the link it ends."""
        return self.settings.type or self.link_type or "?"

    @property
    def addresses(self) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        return [*self.settings.ipv4, *self.settings.ipv6]


@dataclass
class Catalog:
    """Every interface of the lab, keyed by (node, interface), and by node."""

    ifaces: dict[tuple[str, str], Iface] = field(default_factory=dict)
    _by_node: dict[str, list[Iface]] = field(default_factory=dict)

    def add(self, iface: Iface) -> None:
        self.ifaces[(iface.node, iface.name)] = iface
        self._by_node.setdefault(iface.node, []).append(iface)

    def of_node(self, node: str) -> list[Iface]:
        return list(self._by_node.get(node, ()))


def endpoint_settings(topo: TopologyShape, link: LinkModel, ep: Endpoint) -> InterfaceSettings:
    """A link end's settings: the node's interfaces entry, the link's MTU, then the endpoint."""
    node = topo.nodes.get(ep.node)
    declared = node.interfaces.get(ep.interface) if node is not None else None
    if link.mtu is not None:
        base = InterfaceSettings(mtu=link.mtu)
        if declared is not None:
            base = base.merged_with(declared)
    else:  # the declared settings as they are (validated, never changed): no copy per end
        base = declared if declared is not None else _NO_SETTINGS
    return base.merged_with(ep)  # only its interface settings (not node, interface)


_NO_SETTINGS = InterfaceSettings()  # an end that sets nothing (shared: settings are read only)


def name_issue(name: str, option: str, loc: tuple[Any, ...]) -> Issue | None:
    """An interface-name problem at loc (the message without check_name's option prefix)."""
    problem = _name_problem(name, option)
    return None if problem is None else Issue(loc, problem)


@functools.lru_cache(maxsize=4096)
def _name_problem(name: str, option: str) -> str | None:
    """What is wrong with an interface name, or None: judged once per name (a big lab repeats
    a few names, eth0 or left and right, thousands of times)."""
    try:
        check_name(name, option)
    except ValueError as exc:
        return str(exc).removeprefix(f"{option}: ")
    if option == "interface" and name == "lo":
        return "'lo' is the loopback interface every node already has: pick another name"
    if option == "interface" and _GENERATED.fullmatch(name):
        return (
            f"{name!r} is how tunlab names the devices it adds to a node (relay shims, VM taps: "
            "tl<letter><link index>...): pick another name"
        )
    return None


# names tunlab gives the helper devices it makes in a node's namespace (links/veth.py, vxlan.py,
# wiring.py): a user's interface of the same name would collide with one at up
_GENERATED = re.compile(r"tl[bvxrqw][0-9]+(?:[a-z][0-9]+)?")


def _endpoint_issue(topo: TopologyShape, cat: Catalog, ep: Endpoint, loc: tuple[Any, ...]) -> Issue | None:
    """Why a link end cannot be catalogued (unknown node, bad or taken name), or None."""
    if ep.node not in topo.nodes:
        known = ", ".join(sorted(topo.nodes)) or "none"
        return Issue(loc, f"node '{ep.node}' is not defined (nodes: {known})")
    bad = name_issue(ep.interface, "interface", (*loc, "interface"))
    if bad is not None:
        return bad
    first = cat.ifaces.get((ep.node, ep.interface))
    if first is not None:
        return Issue(loc, f"interface '{ep.node}:{ep.interface}' is already used by {format_path(first.loc)}")
    declared = topo.nodes[ep.node].interfaces.get(ep.interface)
    if declared is not None and declared.type is not None:
        return Issue(
            loc,
            f"'{ep.node}:{ep.interface}' is declared as a {declared.type} device under "
            f"nodes.{ep.node}.interfaces; a link makes its own interface: use another name",
        )
    if ep.type is not None:
        return Issue((*loc, "type"), "tun/tap devices are declared under nodes.<node>.interfaces")
    return None


def catalog(topo: TopologyShape, issues: list[Issue] | None = None) -> Catalog:
    """Collect interfaces from links and from nodes' tun/tap entries, noting problems."""
    problems = issues if issues is not None else []
    cat = Catalog()
    for li, link in enumerate(topo.links):
        for ei, ep in enumerate(link.endpoints):
            loc = ("links", li, "endpoints", ei)
            bad = _endpoint_issue(topo, cat, ep, loc)
            if bad is not None:
                problems.append(bad)
                continue
            settings = endpoint_settings(topo, link, ep)
            end = Iface(ep.node, ep.interface, loc, settings, li, ei, link.type)
            node = topo.nodes.get(ep.node)
            declared = node.interfaces.get(ep.interface) if node is not None else None
            if declared is not None:  # what the endpoint leaves to the node's entry is blamed there
                given = ep.model_fields_set
                end.declared_at = {
                    name: ("nodes", ep.node, "interfaces", ep.interface)
                    for name in declared.model_fields_set
                    if name not in given
                }
            cat.add(end)
    for name, node in topo.nodes.items():
        for iface, settings in node.interfaces.items():
            if (name, iface) in cat.ifaces:
                continue  # settings for a link end (its name checked there)
            nloc: tuple[Any, ...] = ("nodes", name, "interfaces", iface)
            bad = name_issue(iface, "interface", nloc)
            if bad is not None:
                problems.append(bad)
                continue
            if settings.type is None:
                problems.append(
                    Issue(nloc, "this interface is not connected by any link and has no type (tun or tap)")
                )
                continue
            cat.add(Iface(name, iface, nloc, settings))
    return cat


def hosts_entries(cat: Catalog) -> tuple[tuple[str, str], ...]:
    """(address, node) for every node's /etc/hosts: each node's first IPv4 and first IPv6
    address on each of its interfaces, in the order the topology declares them."""
    out: dict[tuple[str, str], None] = {}  # ordered, and a lookup that stays O(1) at 10,000 nodes
    for iface in cat.ifaces.values():
        for family in (4, 6):
            first = next((a for a in iface.addresses if a.version == family), None)
            if first is not None:
                out.setdefault((str(first.ip), iface.node))
    return tuple(out)
