"""What a client holds of a running lab across hosts: a node and a link reached on their hosts,
and a host's part reached by the lab's name (for clients that did not make the lab)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tunlab.cluster._plan import ClusterPlan
from tunlab.errors import LabError
from tunlab.relay._direction import Direction
from tunlab.topologies._drivers.base import ExecResult
from tunlab.topologies._live_links import parse_impairment
from tunlab.topologies._models import Topology

if TYPE_CHECKING:
    from distributed import Client


class LabParts(Protocol):
    """What a node or link handle asks of its lab (a ClusterLab): its topology, its plan, and
    the part on a host."""

    topology: Topology
    plan: ClusterPlan | None

    def part(self, host: str) -> Any: ...


class _Done:
    """A value already there, with the .result() an actor call's future has."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        return self.value


class RemotePart:
    """A host's part reached by the lab's name (client.run on that host's worker): what a client
    that did not make the lab uses in place of the actor. Calls answer with a done future."""

    def __init__(self, client: Client, lab: str, address: str) -> None:
        self.client, self.lab, self.address = client, lab, address

    def _call(self, method: str, *args: Any) -> _Done:
        from tunlab.cluster._remote import call

        answers = self.client.run(call, self.lab, method, *args, workers=[self.address])
        return _Done(answers[self.address])

    def run(
        self, node: str, argv: list[str], timeout: float | None = 60.0, input: bytes | None = None
    ) -> _Done:
        return self._call("run", node, argv, timeout, input)

    def impair(self, link: int, impairment: Any, direction: str | None = None) -> _Done:
        return self._call("impair", link, impairment, direction)

    def link_stats(self, link: int) -> _Done:
        return self._call("link_stats", link)

    def health(self) -> _Done:
        return self._call("health")

    def inspect(self) -> _Done:
        return self._call("inspect")

    def processes(self, node: str | None = None) -> _Done:
        return self._call("processes", node)

    def capture(self, node: str, interface: str, seconds: float, count: int | None = None) -> _Done:
        return self._call("capture", node, interface, seconds, count)

    def down(self, why: str | None = None) -> _Done:
        return self._call("down", why)

    def touch(self) -> None:
        """Another client's view does not keep the part alive: its maker's heartbeat does."""


class ClusterNode:
    """A node of a lab across hosts, reached on its host."""

    def __init__(self, lab: LabParts, name: str, host: str) -> None:
        self.lab, self.name, self.host = lab, name, host

    def run(self, argv: list[str], *, timeout: float | None = 60.0, input: bytes | None = None) -> ExecResult:
        """Run argv to completion inside the node, on its host."""
        code, out, err = self.lab.part(self.host).run(self.name, list(argv), timeout, input).result()
        return ExecResult(code, out, err)

    def capture(self, interface: str, *, seconds: float, count: int | None = None) -> tuple[bytes, int, int]:
        """Capture on one of the node's interfaces, on its host, for `seconds` (or until
        `count` packets): (the pcap file's bytes, packets, super-packets among them)."""
        found: tuple[bytes, int, int] = (
            self.lab.part(self.host).capture(self.name, interface, seconds, count).result()
        )
        return found

    def __repr__(self) -> str:
        return f"<node {self.name!r} on host {self.host}>"


class ClusterLink:
    """A link of a lab across hosts: a cross-host link is impaired on each side's relay (a_to_b
    where the first end is, b_to_a where the second is), exactly as one relay would."""

    def __init__(self, lab: LabParts, index: int) -> None:
        self.lab, self.index = lab, index
        self.model = lab.topology.links[index]
        assert lab.plan is not None
        self.at = lab.plan.local[index]
        self.crosses = index in lab.plan.wires

    def impair(
        self, impairment: Any = None, *, direction: Direction | str | None = None, **netem: Any
    ) -> None:
        """Set the impairment as on one host (keyword arguments are Netem fields); with
        direction, only that direction changes."""
        if netem:
            if impairment is not None:
                raise LabError("give an impairment or keyword arguments, not both")
            impairment = netem
        way = Direction.parse(direction) if direction is not None else None
        if not self.crosses:
            ((host, li),) = self.at
            self.lab.part(host).impair(li, impairment, way.value if way else None).result()
            return
        if way is None:
            new = parse_impairment(impairment, None, both_ways=type(self.model).both_ways)
            sides = [(0, new.a_to_b), (1, new.b_to_a)]
        else:
            one = getattr(parse_impairment(impairment, way), way.value)
            sides = [(0 if way is Direction.A_TO_B else 1, one)]
        for side, out in sides:  # each direction on the wire it leaves by
            host, li = self.at[side]
            self.lab.part(host).impair(li, out.model_dump(mode="json"), Direction.A_TO_B.value).result()

    def clear(self, direction: Direction | str | None = None) -> None:
        """No impairment (on one direction, or both)."""
        way = Direction.parse(direction) if direction is not None else None
        if not self.crosses:
            ((host, li),) = self.at
            self.lab.part(host).impair(li, None, way.value if way else None).result()
            return
        for side, (host, li) in enumerate(self.at):
            if way is None or side == (0 if way is Direction.A_TO_B else 1):
                self.lab.part(host).impair(li, None, None).result()

    def stats(self) -> dict[str, Any]:
        """Counters per direction as on one host (a cross-host link: a_to_b from the first end's
        host, b_to_a from the second's, each counted where it is impaired), and each host's own
        view under "hosts"."""
        views = {host: self.lab.part(host).link_stats(li).result() for host, li in self.at}
        if not self.crosses:
            return {**next(iter(views.values())), "hosts": views}
        (first, _), (second, _) = self.at
        a, b = views[first], views[second]
        return {
            "via": a.get("via", "relay"),
            "reason": f"across hosts {first} and {second}: each direction where it leaves",
            "a_to_b": a.get("a_to_b", ""),
            "b_to_a": b.get("a_to_b", ""),
            "a_to_b_stats": a.get("a_to_b_stats", {}),
            "b_to_a_stats": b.get("a_to_b_stats", {}),
            "hosts": views,
        }
