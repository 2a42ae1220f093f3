"""What a lab holds while it runs (nodes, bridge namespaces, devices, relays) and the steps
that make it: each step does one thing and knows how to undo it.

Netlink requests go through one IPRoute per namespace for the whole deploy: no fork, no `ip`
process per step.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunlab._linux.netlink import NetlinkSession
from tunlab._linux.netns import NetNamespace
from tunlab.devices._sync import SyncDevice
from tunlab.errors import LabError
from tunlab.relay._relay import Relay
from tunlab.relay.impair._model import LinkImpairment
from tunlab.topologies._catalog import Catalog, Iface, catalog, hosts_entries
from tunlab.topologies._drivers.base import LabContext, NodeDriver, NodeHandle
from tunlab.topologies._fields import LinkModel, NodeBase, TopologyShape
from tunlab.topologies._state import LabState

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from tunlab.topologies._impairments import Placement


class Phase(enum.IntEnum):
    """When a step runs: the plan is every node's and link's steps, in phase order."""

    NODES = 10  # namespaces, containers; VMs get their host-side namespace
    LINKS = 20  # veth pairs, bridges and their ports, tun-pair and tap-pair devices
    DEVICES = 30  # tun/tap interfaces declared under a node
    GUESTS = 40  # VMs boot (their NICs exist now) and are configured from inside
    CONFIGURE = 50  # MTU, MAC, offload, up, addresses: one netlink batch per node
    OVERLAYS = 60  # links that ride on configured interfaces (vxlan), then their ends
    ROUTES = 70  # sysctls and routes of each node
    RELAYS = 80  # relay workers start once both of their devices exist
    IMPAIR = 90  # kernel qdiscs
    EXEC = 100  # the topology's exec: commands
    READY = 110  # healthchecks


@dataclass
class Step:
    name: str
    apply: Callable[[], None]
    undo: Callable[[], None] | None = None
    field: str | None = None  # the topology field it comes from (links[2]), named when it fails


PlannedStep = tuple[Phase, Step]


class Runtime:
    """What a lab holds while it runs: nodes, bridge namespaces, devices and relays."""

    def __init__(self, topo: TopologyShape, lab_id: str, state: LabState) -> None:
        self.topo = topo
        self.lab_id = lab_id
        self.state = state
        self.nodes: dict[str, NodeHandle] = {}
        self.drivers: dict[str, NodeDriver] = {}
        self.bridges: dict[str, NetNamespace] = {}
        self.devices: dict[tuple[str, str], SyncDevice] = {}
        # (link index, endpoint index) -> relay; endpoint -1: the relay of the whole link
        self.relays: dict[tuple[int, int], Relay] = {}
        self.placements: dict[int, Placement] = {}
        self.guests: set[str] = set()  # nodes whose interfaces live in a guest kernel (VMs)
        self.impairs: dict[int, LinkImpairment | None] = {}
        self.resolved: dict[str, NodeBase] = dict(topo.resolved_nodes())
        self.catalog: Catalog = catalog(topo)
        self.ctx = LabContext(lab_id, state.name, hosts_entries(self.catalog))
        self._ipr: dict[str, IPRoute] = {}
        self._batch: dict[str, NetlinkSession] = {}

    # ---- the topology, as link types see it -----------------------------------------------
    def link(self, li: int) -> LinkModel:
        return self.topo.links[li]

    def ends(self, li: int) -> list[Iface]:
        """The interfaces a link's endpoints make, in endpoint order."""
        return [self.catalog.ifaces[(e.node, e.interface)] for e in self.topo.links[li].endpoints]

    def label(self, li: int) -> str:
        return " <-> ".join(f"{e.node}:{e.name}" for e in self.ends(li))

    def in_guest(self, end: Iface) -> bool:
        return end.node in self.guests

    # ---- netlink, one socket per namespace ------------------------------------------------
    def netns(self, node: str) -> NetNamespace:
        return self.nodes[node].netns

    def ipr(self, ns: NetNamespace) -> IPRoute:
        key = ns.path
        if key not in self._ipr:
            self._ipr[key] = ns.iproute()
        return self._ipr[key]

    def index(self, ns: NetNamespace, ifname: str) -> int:
        found = self.ipr(ns).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"interface '{ifname}' does not exist in {ns.name or ns.path}")
        return int(found[0])

    def batch(self, ns: NetNamespace) -> NetlinkSession:
        """The batched rtnetlink socket of a namespace (kept for the whole deploy)."""
        key = ns.path
        if key not in self._batch:
            self._batch[key] = NetlinkSession(ns)
        return self._batch[key]

    def close_netlink(self) -> None:
        for ipr in self._ipr.values():
            ipr.close()
        self._ipr.clear()
        for batch in self._batch.values():
            batch.close()
        self._batch.clear()

    # ---- teardown of what this process holds -----------------------------------------------
    def release(self) -> list[str]:
        """Stop relays, close devices, remove nodes and bridges; returns problems met."""
        problems: list[str] = []
        self.close_netlink()
        for relay in self.relays.values():
            attempt(problems, relay.stop)
        self.relays.clear()
        for dev in self.devices.values():
            attempt(problems, dev.close)
        self.devices.clear()
        problems += destroy_nodes(self.drivers, self.nodes)
        self.nodes.clear()
        for ns in self.bridges.values():
            attempt(problems, ns.delete)
        self.bridges.clear()
        return problems


def destroy_nodes(drivers: dict[str, NodeDriver], handles: dict[str, NodeHandle]) -> list[str]:
    """Remove these nodes, each kind's together (its driver may batch them); problems met."""
    by_driver: dict[int, tuple[NodeDriver, list[NodeHandle]]] = {}
    for name, handle in handles.items():
        driver = drivers[name]
        by_driver.setdefault(id(driver), (driver, []))[1].append(handle)
    problems: list[str] = []
    for driver, group in by_driver.values():
        problems += driver.destroy_many(group)
    return problems


def attempt(problems: list[str], fn: Callable[[], object]) -> None:
    """Call fn; a failure is noted in problems (teardown goes on)."""
    try:
        fn()
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
