"""Where each node of a lab runs, and what each host's part of it is: pure planning, no Dask.

Placement: a node's `host:` wins; the others fill the lab's hosts in the file's order, each
host taking its share in turn (nodes written together, often linked together, stay together),
VMs going to the host with the least VM memory. Split: each host gets a topology of its
nodes and of the links between them; a link whose ends are on two hosts becomes a `wire` on
each (links/wire.py), its a_to_b impairment leaving from the first end's host, b_to_a from the
second's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from tunlab.errors import TopologyError
from tunlab.topologies._catalog import Issue
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._fieldpath import format_path
from tunlab.topologies._fields import HostEntry
from tunlab.topologies._links import link_type
from tunlab.topologies._links import wire as wire_rules
from tunlab.topologies._loader import model_from_data
from tunlab.topologies._models import Topology


@dataclass
class WireEnd:
    """One host's end of a cross-host link: the wire's index in that host's links."""

    host: str
    local_index: int
    port: int = 0


@dataclass
class ClusterPlan:
    """A lab cut into its hosts' parts."""

    placement: dict[str, str]  # node -> host
    underlay: dict[str, str]  # host -> the address cross-host links use
    parts: dict[str, dict[str, Any]]  # host -> its topology (as data)
    local: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # link -> (host, index)s
    wires: dict[int, tuple[WireEnd, WireEnd]] = field(default_factory=dict)  # cross-host links
    vnis: dict[int, int] = field(default_factory=dict)  # vxlan cross-host links: their vni

    def vxlan(self) -> list[int]:
        """The cross-host links carried by kernel vxlan (the others: a relay over UDP)."""
        return [li for li, (a, _) in self.wires.items() if wire_rules.needs_vni(self._wire(a))]

    def _wire(self, end: WireEnd) -> dict[str, Any]:
        found: dict[str, Any] = self.parts[end.host]["links"][end.local_index]
        return found

    def give_vnis(self, vnis: dict[int, int]) -> None:
        """Each vxlan link's network identifier, the same at both ends."""
        for li, vni in vnis.items():
            for end in self.wires[li]:
                self._wire(end)["vni"] = vni
        self.vnis.update(vnis)

    def connect(self, ports: dict[tuple[int, str], int]) -> None:
        """Fill each udp wire's ports: ports[(link, host)] is the UDP port reserved on that host."""
        for li, ends in self.wires.items():
            if li in self.vnis:
                continue
            for end in ends:
                end.port = ports[(li, end.host)]
            for mine, theirs in (ends, ends[::-1]):
                wire = self.parts[mine.host]["links"][mine.local_index]
                wire["port"], wire["peer_port"] = mine.port, theirs.port

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> ClusterPlan:
        """The plan as summary() recorded it (parts are not kept: they are up on their hosts)."""
        plan = cls(dict(data["placement"]), dict(data["underlay"]), {h: {} for h in data["hosts"]})
        plan.local = {int(li): [(str(h), int(i)) for h, i in at] for li, at in data["local"].items()}
        plan.wires = {
            int(li): (WireEnd(str(a[0]), int(a[1]), int(a[2])), WireEnd(str(b[0]), int(b[1]), int(b[2])))
            for li, (a, b) in data["wires"].items()
        }
        plan.vnis = {int(li): int(v) for li, v in data.get("vnis", {}).items()}
        return plan

    def summary(self) -> dict[str, Any]:
        """What other clients need to find the lab's parts (published with the lab)."""
        return {
            "placement": self.placement,
            "underlay": self.underlay,
            "local": {str(li): [list(x) for x in at] for li, at in self.local.items()},
            "wires": {
                str(li): [[e.host, e.local_index, e.port] for e in ends] for li, ends in self.wires.items()
            },
            "vnis": {str(li): vni for li, vni in self.vnis.items()},
        }


def lab_hosts(topo: Topology, workers: dict[str, str]) -> tuple[dict[str, str], list[Issue]]:
    """The hosts a lab uses (name -> underlay address) out of the cluster's workers (name ->
    their address): those `hosts:` lists, or every worker."""
    if not topo.hosts:
        return dict(sorted(workers.items())), []
    out: dict[str, str] = {}
    issues: list[Issue] = []
    for i, entry in enumerate(topo.hosts):
        name = entry.name if isinstance(entry, HostEntry) else entry
        loc: tuple[Any, ...] = ("hosts", i, "name") if isinstance(entry, HostEntry) else ("hosts", i)
        if name not in workers:
            issues.append(Issue(loc, f"host {name!r} is not in the cluster ({_known(workers)})"))
        elif name in out:
            issues.append(Issue(loc, f"host {name!r} is listed twice"))
        else:
            underlay = entry.underlay if isinstance(entry, HostEntry) else None
            out[name] = str(underlay) if underlay is not None else workers[name]
    return out, issues


def _known(workers: dict[str, str]) -> str:
    return f"its hosts: {', '.join(sorted(workers))}" if workers else "it has no workers"


def place(topo: Topology, hosts: dict[str, str]) -> tuple[dict[str, str], list[Issue]]:
    """node -> host for every node, and the issues of nodes placed on hosts the lab lacks."""
    issues: list[Issue] = []
    placement: dict[str, str] = {}
    load = dict.fromkeys(hosts, 0)
    vm_memory = dict.fromkeys(hosts, 0)
    nodes = topo.resolved_nodes()
    memory = {name: driver_for(node.kind).memory(node) or 0 for name, node in nodes.items()}
    for name, node in nodes.items():
        if node.host is None:
            continue
        if node.host not in hosts:
            where = "the lab's hosts" if topo.hosts else "the cluster"
            issues.append(
                Issue(("nodes", name, "host"), f"host {node.host!r} is not in {where} ({_known(hosts)})")
            )
            continue
        placement[name] = node.host
        load[node.host] += 1
        vm_memory[node.host] += memory[name]
    if not hosts:
        return placement, issues
    free = [n for n, node in nodes.items() if node.host is None]
    for name in sorted((n for n in free if memory[n]), key=lambda n: -memory[n]):  # VMs, largest first
        host = min(hosts, key=lambda h: (vm_memory[h], load[h]))
        placement[name] = host
        load[host] += 1
        vm_memory[host] += memory[name]
    share = math.ceil(len(nodes) / len(hosts))
    order = list(hosts)
    at = 0
    for name in free:
        if name in placement:
            continue
        while at < len(order) - 1 and load[order[at]] >= share:
            at += 1
        host = order[at] if load[order[at]] < share else min(order, key=lambda h: load[h])
        placement[name] = host
        load[host] += 1
    return placement, issues


def split(
    topo: Topology, placement: dict[str, str], hosts: dict[str, str]
) -> tuple[ClusterPlan, list[Issue]]:
    """Each host's part of the lab; issues for links that cannot span the hosts they join."""
    data = topo.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data.pop("hosts", None)
    data.pop("vars", None)
    used = [h for h in hosts if h in placement.values()]
    parts: dict[str, dict[str, Any]] = {
        h: {**copy.deepcopy({k: v for k, v in data.items() if k not in ("nodes", "links")}),
            "nodes": {}, "links": []}
        for h in used
    }  # fmt: skip
    for name, node in data["nodes"].items():
        parts[placement[name]]["nodes"][name] = node
    plan = ClusterPlan(placement, {h: hosts[h] for h in used}, parts)
    issues: list[Issue] = []
    for li, (link, raw) in enumerate(zip(topo.links, data.get("links", []), strict=True)):
        on = [placement[e.node] for e in link.endpoints]
        if len(set(on)) == 1:
            plan.local[li] = [(on[0], len(parts[on[0]]["links"]))]
            parts[on[0]]["links"].append(raw)
            continue
        kind = link_type(link.type)
        wire = kind.across_hosts(link) if len(on) == 2 else None
        if wire is None:
            ends = ", ".join(f"{e.node} on {h}" for e, h in zip(link.endpoints, on, strict=True))
            issues.append(
                Issue(
                    ("links", li, "endpoints"),
                    f"a {kind.name} link cannot span hosts ({ends}): place its nodes on one host "
                    "(host: on each node), or use a veth or tun-pair link",
                )
            )
            continue
        problem = wire_rules.crossing_issue(link, kind.name, wire)
        if problem is not None:
            issues.append(Issue(("links", li, problem[0]), problem[1]))
            continue
        ends_at: list[WireEnd] = []
        for side, (end, host) in enumerate(zip(raw["endpoints"], on, strict=True)):
            w = wire_rules.wire_for(link, raw, end, side, wire, hosts[host], hosts[on[1 - side]])
            ends_at.append(WireEnd(host, len(parts[host]["links"])))
            parts[host]["links"].append(w)
        plan.local[li] = [(e.host, e.local_index) for e in ends_at]
        plan.wires[li] = (ends_at[0], ends_at[1])
    return plan, issues


def plan_lab(topo: Topology, workers: dict[str, str], where: str = "topology") -> ClusterPlan:
    """Placement and split in one; TopologyError naming each field path that cannot be met."""
    hosts, issues = lab_hosts(topo, workers)
    placement, more = place(topo, hosts)
    issues += more
    if not issues:
        plan, more = split(topo, placement, hosts)
        issues += more
        if not issues:
            for host, part in plan.parts.items():
                check_part(host, part)
            return plan
    raise TopologyError("\n".join(f"{where}: {format_path(i.loc)}: {i.message}" for i in issues))


def check_part(host: str, part: dict[str, Any]) -> Topology:
    """A host's part validated here, before any host is touched (validate = deploy)."""
    try:
        return model_from_data(part)
    except TopologyError as exc:  # a rule only the split can break (a wire to a VM...): say where
        raise TopologyError(f"the part of the lab on host {host!r}: {exc}") from None
