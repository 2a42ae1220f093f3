"""ClusterLab: a lab whose nodes run on several hosts of a Dask cluster.

The client plans (placement, each host's part, the cross-host wires) and checks every part
before any host is touched; each host's part is then held by a HostPart actor on its worker.
Bring-up has two rounds: each host reserves a UDP port per wire, then all parts come up at
once with their peers' ports. A failure anywhere takes every part down again.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunlab.cluster._connect import ClusterError, Tls, connect, workers
from tunlab.cluster._handles import ClusterLink, ClusterNode, RemotePart
from tunlab.cluster._part import HostPart
from tunlab.cluster._plan import ClusterPlan, plan_lab
from tunlab.cluster._records import DATASET, LOCK, records, taken_vnis
from tunlab.errors import LabError
from tunlab.topologies._lab import check_lab_name
from tunlab.topologies._live_links import link_index
from tunlab.topologies._loader import load_file
from tunlab.topologies._models import Topology
from tunlab.topologies._state import new_lab_id

if TYPE_CHECKING:
    from distributed import Client

VNI_FIRST = 4096  # vnis a lab across hosts takes: above those people write by hand
_RANDOM = random.SystemRandom()
HEARTBEAT = 1.0  # seconds between the client's words to each part (and its look at the workers)
UNANSWERED = 3.0  # a host whose part has not answered a heartbeat for this long is lost


class ClusterLab:
    """A lab across the hosts of a Dask cluster: up(), node(), link(), health(), down().

    Example:
        ```python
        from tunlab.topologies import Lab

        with Lab.from_file("lab.yaml", cluster="tls://198.18.250.1:8786") as lab:
            print(lab.placement)  # node -> host
            assert lab.node("h1").run(["ping", "-c1", "198.18.2.2"]).ok
        ```
    """

    def __init__(
        self,
        topology: Topology,
        *,
        cluster: str | Client | None,
        name: str | None = None,
        unique: bool = False,
        source: str | None = None,
        insecure: bool = False,
        tls: Tls | None = None,
        detached: bool = False,
    ) -> None:
        if not isinstance(topology, Topology):
            raise TypeError(f"ClusterLab needs a Topology, got {type(topology).__name__}")
        self.topology = topology
        base = check_lab_name(name) if name is not None else topology.name
        self.name = f"{base}-{new_lab_id()}" if unique else base
        self.source = source
        self.detached = detached
        self._cluster, self._insecure, self._tls = cluster, insecure, tls
        self._client: Client | None = None
        self._own_client = False
        self.plan: ClusterPlan | None = None
        self._parts: dict[str, Any] = {}  # host -> HostPart actor
        self._futures: list[Any] = []  # keep the actors alive while this object holds them
        self._addresses: dict[str, str] = {}  # host -> worker address
        self._lost: dict[str, str] = {}  # host -> what happened to it
        self._touches: dict[str, tuple[Any, float]] = {}  # host -> (its last heartbeat, sent at)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.on_host_lost: Callable[[str, str], None] | None = None  # (host, cause), from a thread

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vars: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ClusterLab:
        """A lab across hosts from a YAML/TOML/JSON topology file, rendered with vars."""
        return cls(load_file(path, vars), source=str(Path(path).resolve()), **kwargs)

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        cluster: str | Client | None,
        insecure: bool = False,
        tls: Tls | None = None,
    ) -> ClusterLab:
        """A running lab across hosts that another client brought up, by its name: node(),
        link(), health(), inspect(), down() work on it as on the creator's (LabError when the
        cluster holds no lab of that name)."""
        client = connect(cluster, insecure=insecure, tls=tls)
        try:
            record = client.get_dataset(DATASET + name, default=None)
            if record is None:
                raise LabError(f"the cluster holds no lab named '{name}' (`tunlab ls --cluster` lists them)")
            lab = cls(Topology.model_validate(record["topology"]), cluster=client, name=name)
            lab._own_client = cluster is not client
            lab._client = client
            lab.source, lab.detached = record.get("source"), bool(record.get("detached"))
            lab.plan = ClusterPlan.from_summary(record)
            lab._addresses = dict(record["hosts"])
            present = {addr for addr, _ in workers(client).values()}
            for host, addr in lab._addresses.items():
                if addr in present:
                    lab._parts[host] = RemotePart(client, name, addr)
                else:
                    lab._lost[host] = f"its worker {addr} is not in the cluster"
                    lab._parts[host] = None
        except BaseException:
            if cluster is not client:
                client.close()  # type: ignore[no-untyped-call]
            raise
        return lab

    # ---- planning -----------------------------------------------------------------------------
    def _connect(self) -> Client:
        if self._client is None:
            from distributed import Client

            self._own_client = not isinstance(self._cluster, Client)
            self._client = connect(self._cluster, insecure=self._insecure, tls=self._tls)
        return self._client

    def validate(self) -> ClusterPlan:
        """Plan the lab on the cluster as it is now and check every host's part; TopologyError
        names each field path that cannot be met (a node on a host not in the cluster)."""
        client = self._connect()
        found = workers(client)
        self._addresses = {n: addr for n, (addr, _) in found.items()}
        self.plan = plan_lab(
            self.topology, {n: ip for n, (_, ip) in found.items()}, self.source or "topology"
        )
        return self.plan

    @property
    def placement(self) -> dict[str, str]:
        """node -> the host it runs on (after up() or validate())."""
        return dict(self.plan.placement) if self.plan is not None else {}

    @property
    def hosts(self) -> list[str]:
        """The hosts that hold a part of the lab (after up() or validate())."""
        return list(self.plan.parts) if self.plan is not None else []

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The lab is up (between up() and down()), or attached to."""
        return bool(self._parts)

    def up(self) -> ClusterLab:
        """Bring every host's part up; on any failure none is left and ClusterError names the
        host and the step."""
        if self._parts:
            raise LabError(f"lab '{self.name}' is already up")
        client = self._connect()
        claimed = False
        try:
            plan = self.validate()
            self._claim(client, plan)
            claimed = True
            tag = uuid.uuid4().hex[:8]
            futures = {
                host: client.submit(
                    HostPart,
                    self.name,
                    host,
                    detached=self.detached,
                    actor=True,
                    workers=[self._addresses[host]],
                    allow_other_workers=False,
                    key=f"tunlab-{self.name}-{host}-{tag}",
                )
                for host in plan.parts
            }
            self._futures = list(futures.values())
            with client.as_current():  # the actor handles bind to this client
                self._parts = {host: fut.result(timeout=60) for host, fut in futures.items()}
            self._reserve_ports(plan)
            self._gather(
                {h: p.up(plan.parts[h], self.source) for h, p in self._parts.items()},
                "deploy failed",
                rollback=True,
            )
            client.publish_dataset(self._record(), name=DATASET + self.name, override=True)
        except BaseException:
            if self._parts:  # a signal or a failure mid-way: no part stays behind
                self._down_parts("the lab's bring-up did not finish")
            if claimed:
                with contextlib.suppress(Exception):
                    client.unpublish_dataset(DATASET + self.name)
            self._parts, self._futures = {}, []
            self._close_client()
            raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"tunlab-cluster-{self.name}", daemon=True)
        self._beat.start()
        return self

    def wait_down(self, timeout: float | None = None) -> bool:
        """Block until down() ran (here) or timeout seconds pass; True once it is down."""
        return self._stop.wait(timeout)

    def _claim(self, client: Client, plan: ClusterPlan) -> None:
        """Take the lab's name on the cluster, and a vni for each vxlan link that no recorded
        lab uses (under a cluster-wide lock: two clients never take the same)."""
        from distributed import Lock

        with Lock(LOCK, scheduler_rpc=client.scheduler, loop=client.loop):  # type: ignore[no-untyped-call]
            if self.name in records(client):
                raise LabError(
                    f"a lab named '{self.name}' is already on the cluster: "
                    f"`tunlab down {self.name} --cluster` first, or give this one another name"
                )
            taken = taken_vnis(client)
            chosen: dict[int, int] = {}
            for li in plan.vxlan():
                vni = _RANDOM.randint(VNI_FIRST, 16_777_215)
                while vni in taken:
                    vni = _RANDOM.randint(VNI_FIRST, 16_777_215)
                taken.add(vni)
                chosen[li] = vni
            plan.give_vnis(chosen)
            client.publish_dataset(self._record(), name=DATASET + self.name)

    def _reserve_ports(self, plan: ClusterPlan) -> None:
        wanted: dict[str, list[int]] = {}
        for li, ends in plan.wires.items():
            if li in plan.vnis:
                continue  # kernel vxlan: its port is the vxlan port
            for end in ends:
                wanted.setdefault(end.host, []).append(li)
        got = self._gather(
            {h: self._parts[h].reserve([plan.underlay[h]] * len(lis)) for h, lis in wanted.items()},
            "reserving wire ports failed",
            rollback=True,
        )
        plan.connect(
            {(li, h): port for h, lis in wanted.items() for li, port in zip(lis, got[h], strict=True)}
        )

    def _gather(self, calls: dict[str, Any], what: str, *, rollback: bool = False) -> dict[str, Any]:
        """Wait for one actor call per host; ClusterError naming each host that failed (after
        taking every part down when rollback)."""
        results: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for host, fut in calls.items():
            try:
                results[host] = fut.result()
            except Exception as exc:
                errors[host] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LabError) else str(exc)
        if errors:
            if rollback:
                self._down_parts("the lab's bring-up failed")
            lines = [f"host {h}: {e}" for h, e in errors.items()]
            raise ClusterError(f"lab '{self.name}': {what} on {len(errors)} host(s):\n" + "\n".join(lines))
        return results

    def _record(self) -> dict[str, Any]:
        assert self.plan is not None
        return {
            "name": self.name,
            "status": "up" if self._parts else "starting",
            "detached": self.detached,
            "hosts": {h: self._addresses[h] for h in self.plan.parts},
            "source": self.source,
            "topology": self.topology.model_dump(mode="json", by_alias=True),
            **self.plan.summary(),
        }

    def down(self) -> list[str]:
        """Take every reachable part down; the problems met, including each host that could not
        be reached (its part is left to that host's `tunlab gc`)."""
        if not self._parts:
            return []
        self._stop.set()
        problems = self._down_parts("`down`")
        client = self._client
        if client is not None:
            try:
                client.unpublish_dataset(DATASET + self.name)
            except Exception:  # noqa: S110 (another client took it down already)
                pass
        self._let_go()
        return problems

    def detach(self) -> None:
        """Let go of the lab without taking it down: each host keeps its part (a detached lab
        until `tunlab down NAME --cluster`; a foreground one ends once nobody speaks for it)."""
        self._stop.set()
        self._let_go()

    def _let_go(self) -> None:
        for fut in self._futures:
            fut.release()
        self._parts, self._futures = {}, []
        self._close_client()

    def _down_parts(self, why: str) -> list[str]:
        problems: list[str] = []
        calls = {}
        for host, actor in self._parts.items():
            if host in self._lost:
                problems.append(
                    f"host {host}: not reachable ({self._lost[host]}): its part is left to `tunlab gc` there"
                )
                continue
            try:
                calls[host] = actor.down(why)
            except Exception as exc:
                problems.append(f"host {host}: not reachable ({exc}): its part is left to `tunlab gc` there")
        for host, fut in calls.items():
            try:
                problems += [f"host {host}: {p}" for p in fut.result(timeout=120)]
            except Exception as exc:
                problems.append(
                    f"host {host}: not reachable ({type(exc).__name__}: {exc}): "
                    "its part is left to `tunlab gc` there"
                )
        return problems

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._own_client:
            client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> ClusterLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- is every part alive ------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT / 2):
            client = self._client
            if client is None:
                return
            try:
                present = {addr for addr, _ in workers(client).values()}
            except Exception:  # noqa: S112 (the scheduler is away: the next beat tells)
                continue
            for host, actor in list(self._parts.items()):
                if host in self._lost:
                    continue
                if self._addresses[host] not in present:
                    self._host_lost(host, f"its worker {self._addresses[host]} left the cluster")
                    continue
                pending = self._touches.get(host)
                if pending is not None and not pending[0].done():
                    if time.monotonic() - pending[1] > UNANSWERED:
                        self._host_lost(host, f"its worker has not answered for {UNANSWERED:g} s")
                    continue
                try:
                    self._touches[host] = (actor.touch(), time.monotonic())
                except Exception as exc:
                    self._host_lost(host, f"its worker does not answer ({type(exc).__name__})")

    def _host_lost(self, host: str, cause: str) -> None:
        if host in self._lost:
            return
        self._lost[host] = f"{cause} at {time.strftime('%H:%M:%S')}"
        if self.on_host_lost is not None:
            self.on_host_lost(host, self._lost[host])

    def health(self) -> dict[str, str]:
        """What died while the lab ran: a lost host ('host h2': its cause), or a part of a host
        (its dead relay, VM, container), each with its cause; {} while all work."""
        out = {f"host {h}": cause for h, cause in self._lost.items()}
        calls = {h: p.health() for h, p in self._parts.items() if h not in self._lost}
        for host, fut in calls.items():
            try:
                out.update({f"{k} (host {host})": v for k, v in fut.result(timeout=10).items()})
            except Exception as exc:
                self._host_lost(host, f"its worker does not answer ({exc})")
                out[f"host {host}"] = self._lost[host]
        return out

    # ---- using it -----------------------------------------------------------------------------
    def part(self, host: str) -> Any:
        """The HostPart actor (or, attached, a RemotePart) holding host's part of the lab."""
        if not self._parts:
            raise LabError(f"lab '{self.name}' is not up: call up() or use `with`")
        if host in self._lost:
            raise ClusterError(f"host {host} of lab '{self.name}' is lost: {self._lost[host]}")
        return self._parts[host]

    def inspect(self) -> dict[str, Any]:
        """Each host's `inspect` of its part (nodes, interfaces, routes, live counters) by host,
        with the placement; a lost host's entry says what happened to it."""
        out: dict[str, Any] = {"name": self.name, "placement": self.placement, "hosts": {}}
        for host in self.hosts:
            try:
                out["hosts"][host] = self.part(host).inspect().result(timeout=60)
            except Exception as exc:
                out["hosts"][host] = {"error": str(exc)}
        return out

    def processes(self, node: str | None = None) -> dict[str, Any]:
        """What runs in each node (or one), each asked on its host, as `tunlab ps` lists them."""
        hosts = [self.node(node).host] if node is not None else self.hosts
        found: dict[str, Any] = {}
        for host in hosts:
            found.update(self.part(host).processes(node).result(timeout=60))
        return found

    def node(self, name: str) -> ClusterNode:
        """A node wherever it runs: .run(argv) there."""
        if name not in self.placement:
            raise LabError(f"lab '{self.name}' has no node '{name}' (nodes: {', '.join(self.placement)})")
        return ClusterNode(self, name, self.placement[name])

    def link(self, selector: int | str) -> ClusterLink:
        """A link by index, name or one of its ends ('h1:eth0'): impair(), clear(), stats()."""
        return ClusterLink(self, link_index(self.topology.links, selector))

    def __repr__(self) -> str:
        state = "up" if self.running else "down"
        return f"<ClusterLab {self.name!r} on {', '.join(self.hosts) or 'no hosts'} {state}>"
