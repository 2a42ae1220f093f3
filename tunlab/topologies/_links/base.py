"""What every link type is: its model (the fields a topology file gives it) and a LinkType
that validates it, plans its steps, says where its impairment runs and how it is drawn.

A link type is one module in this package defining a LinkModel subclass and a LinkType
subclass that names it; the registry (links/__init__.py) finds it. Nothing outside this
package compares a link type's name.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tunlab.relay._direction import Direction
from tunlab.relay.impair._model import LinkImpairment
from tunlab.relay.impair._params import NetemParams
from tunlab.topologies._catalog import Catalog, Iface, Issue
from tunlab.topologies._fields import LinkModel as LinkModel  # every link model's base
from tunlab.topologies._fields import TopologyShape
from tunlab.topologies._impairments import Placement, place

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace
    from tunlab.topologies._runtime import PlannedStep, Runtime

A_TO_B, B_TO_A = Direction.A_TO_B, Direction.B_TO_A


@dataclass
class CheckContext:
    """What validation of one link may look at: the topology, its interfaces, and what other
    links of the lab already claimed (names shared across links)."""

    topo: TopologyShape
    catalog: Catalog
    in_guest: dict[str, bool]  # node -> its interfaces live in a guest kernel (VM)
    claimed: dict[str, Any] = field(default_factory=dict)


KernelTarget = tuple["NetNamespace", str, Direction]  # (namespace, interface, direction)


class LinkType(abc.ABC):
    """One type of link: how it is checked, made, impaired, drawn and described."""

    name: ClassVar[str]
    model: ClassVar[type[LinkModel]]
    rank: ClassVar[int] = 50  # its place in lists (messages, the schema)
    default: ClassVar[bool] = False  # the type of a link that names none (the brief form)
    endpoints: ClassVar[tuple[int, int | None]] = (2, 2)  # at least, at most (None: no limit)
    l2: ClassVar[bool] = True  # Ethernet frames: a 14-byte header, addresses with a broadcast
    own_relay: ClassVar[bool] = False  # always relayed: its impairment is a stage of its relay
    ethtool_offload: ClassVar[bool] = True  # `offload: on|off` on an end means ethtool features
    graph_style: ClassVar[str] = "solid"  # graphviz edge style
    mermaid_arrow: ClassVar[str] = "---"

    # ---- validation ---------------------------------------------------------------------------
    def check(self, ctx: CheckContext, li: int, link: LinkModel) -> list[Issue]:
        """Problems only this type knows (beyond the model's own rules and the endpoint count)."""
        return []

    def check_end(self, ctx: CheckContext, li: int, ei: int, iface: Iface) -> list[Issue]:
        """Problems of one end of a link of this type (a VM end where the type cannot go...)."""
        return []

    # ---- naming -----------------------------------------------------------------------------
    def selectors(self, li: int, link: LinkModel) -> list[str]:
        """Names the link can be found by besides its index and ends (lab.link(...))."""
        return [link.name] if link.name else []

    def planned_namespaces(self, lab_id: str, li: int, link: LinkModel) -> list[str]:
        """Namespaces the engine makes for this link (recorded before anything exists)."""
        return []

    def across_hosts(self, link: LinkModel) -> dict[str, Any] | None:
        """What a wire (links/wire.py) needs to carry this link between two cluster hosts (its
        layer, offload); None: the type cannot span hosts (its ends must share one)."""
        return None

    # ---- deploying ----------------------------------------------------------------------------
    @abc.abstractmethod
    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        """The steps that make this link, each in its phase, each knowing its undo."""

    def end_is_l2(self, rt: Runtime, end: Iface) -> bool:
        """The end carries Ethernet frames (its IPv4 addresses get a broadcast)."""
        return self.l2

    def configured_by_netlink(self, rt: Runtime, end: Iface) -> bool:
        """The end is configured (MTU, MAC, up, addresses) in its node's netlink batch; False when
        this type configures it itself (devices built configured, tunnels after the underlay)."""
        return not rt.in_guest(end)

    # ---- impairment ---------------------------------------------------------------------------
    def placement(self, link: LinkModel, qdiscs: frozenset[str]) -> Placement:
        """Where the link's impairment runs: its own relay, kernel qdiscs, or a relay inserted in
        place of the kernel link (LabError when impair_via: kernel cannot be met)."""
        if self.own_relay:
            return Placement("relay", "")
        return place(link, qdiscs)

    def kernel_targets(self, rt: Runtime, li: int) -> list[KernelTarget]:
        """(namespace, interface, direction) whose egress carries each direction of the link."""
        ends = rt.ends(li)
        return [
            (rt.netns(ends[0].node), ends[0].name, A_TO_B),
            (rt.netns(ends[1].node), ends[1].name, B_TO_A),
        ]

    def relay_impairment(self, key: tuple[int, int], imp: LinkImpairment) -> dict[Direction, NetemParams]:
        """What the relay at key (link, end; end -1: the whole link) runs for an impairment."""
        return imp.params()

    def relay_directions(self, key: tuple[int, int]) -> list[tuple[Direction, Direction]]:
        """(relay direction, link direction) pairs whose counters the relay at key holds."""
        return [(A_TO_B, A_TO_B), (B_TO_A, B_TO_A)]

    # ---- showing it -----------------------------------------------------------------------------
    def edge_label(self, link: LinkModel) -> str:
        """What the graph writes on the edge besides the interfaces."""
        return self.name

    def mermaid(self, li: int, link: LinkModel, label: Any) -> list[str]:
        """Mermaid lines for the link; label(node, interface) is an end's text."""
        a, b = link.endpoints[0], link.endpoints[-1]
        left, right = label(a.node, a.interface), label(b.node, b.interface)
        return [f'  {a.node} {self.mermaid_arrow}|"{left} · {self.name} · {right}"| {b.node}']

    def dot(self, li: int, link: LinkModel, quote: Any, label_attr: str) -> list[str]:
        """Graphviz lines for the link; quote() makes a graphviz string."""
        a, b = link.endpoints[0], link.endpoints[-1]
        label = f"{self.edge_label(link)}\n{a.interface} — {b.interface}"
        return [
            f"  {quote(a.node)} -- {quote(b.node)} [style={self.graph_style}, {label_attr}={quote(label)}];"
        ]

    def describe(self, link: dict[str, Any]) -> dict[str, Any]:
        """`inspect`'s row for a link (from the state file's copy of the topology)."""
        return {"type": self.name, "endpoints": [f"{e['node']}:{e['interface']}" for e in link["endpoints"]]}
