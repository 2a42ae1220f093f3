"""Lab: bring a topology up, use its nodes and devices, tear it down leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, overload

from tunlab.devices._sync import SyncDevice
from tunlab.errors import LabError, LabStopped
from tunlab.topologies import _engine as engine
from tunlab.topologies._cleanup import remove_lab_leftovers, remove_namespaces, teardown_state
from tunlab.topologies._control import ControlServer
from tunlab.topologies._drivers.base import LabContext, NodeHandle
from tunlab.topologies._fields import NAME_RE
from tunlab.topologies._health import HealthWatch, link_part
from tunlab.topologies._live_links import LabLink, find_link
from tunlab.topologies._loader import load_file
from tunlab.topologies._models import Topology
from tunlab.topologies._state import (
    LabState,
    all_labs,
    claim,
    new_lab_id,
    owned_namespaces,
    process_start,
    registry_lock,
)

SPANNING_GROUP = "tunlab.spanning_labs"  # entry points: labs that span several hosts


def spanning_lab() -> Any:
    """The class that makes a lab across a cluster's hosts: the layer above this one, found by
    its entry point (pyproject.toml) so that this layer never imports it."""
    from importlib.metadata import entry_points

    for point in entry_points(group=SPANNING_GROUP):
        if point.name == "dask":
            return point.load()
    raise LabError(
        "labs across hosts need tunlab installed with its entry points: pip install 'tunlab[cluster]'"
    )


def check_lab_name(name: str) -> str:
    """A lab name: 1-48 letters, digits, '.', '_' or '-', not starting with a dot (it names files)."""
    if not isinstance(name, str):
        raise TypeError(f"lab name: expected a str, got {type(name).__name__}")
    if not re.fullmatch(NAME_RE, name) or len(name) > 48:
        raise ValueError(
            f"lab name {name!r}: use 1-48 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


class Lab:
    """A lab made from a Topology: up() brings it up (rolled back on failure), down() removes
    everything it made; as a context manager it does both.

    Example:
        ```python
        from tunlab.topologies import Lab

        with Lab.from_file("examples/demo.yaml") as lab:
            assert lab.node("h1").run(["ping", "-c1", "198.18.2.2"]).ok
            lab.link("h2:tun0").impair(delay="20ms", loss="1%")
            print(lab.link("h2:tun0").stats())
        ```
    """

    def __init__(
        self,
        topology: Topology,
        *,
        name: str | None = None,
        unique: bool = False,
        source: str | None = None,
        progress: engine.Progress | None = None,
    ) -> None:
        if not isinstance(topology, Topology):
            raise TypeError(f"Lab needs a Topology, got {type(topology).__name__}")
        self.topology = topology
        self.id = new_lab_id()
        base = check_lab_name(name) if name is not None else topology.name
        self.name = f"{base}-{self.id}" if unique else base
        self.source = source
        self.progress = progress
        self.detached = False
        self._rt: engine.Runtime | None = None
        self._state: LabState | None = None
        self._control: ControlServer | None = None
        self._down = threading.Event()  # set once the lab is down (here, or asked from outside)
        self._stopped_by: str | None = None  # who took it down from outside
        self._teardown = threading.RLock()  # a down from outside waits for a live change, and back
        self._health: HealthWatch | None = None

    @overload
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vars: Mapping[str, Any] | None = None,
        *,
        cluster: None = None,
        **kwargs: Any,
    ) -> Lab: ...

    @overload
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vars: Mapping[str, Any] | None = None,
        *,
        cluster: Any,
        **kwargs: Any,
    ) -> Any: ...  # a ClusterLab (typed in its own layer, which builds on this one)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vars: Mapping[str, Any] | None = None,
        *,
        cluster: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A lab from a YAML/TOML/JSON topology file, rendered with vars. With cluster (a Dask
        scheduler's address or a distributed.Client) the lab spans that cluster's hosts: a
        ClusterLab (docs/cluster.md)."""
        source = str(Path(path).resolve())
        if cluster is not None:
            return spanning_lab()(load_file(path, vars), cluster=cluster, source=source, **kwargs)
        return cls(load_file(path, vars), source=source, **kwargs)

    # ---- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The lab is up (between up() and down())."""
        return self._rt is not None

    def up(self) -> Lab:
        """Create everything; on failure nothing is left and DeployError names the step."""
        if self._rt is not None:
            raise LabError(f"lab '{self.name}' is already up")
        state = self._register()
        rt = engine.Runtime(self.topology, self.id, state)
        try:
            steps = engine.plan(rt)
            engine.apply(steps, progress=self.progress)
        except BaseException:
            rt.release()
            remove_namespaces(owned_namespaces(self.id))  # a namespace made by a failed step
            remove_lab_leftovers(self.id)
            state.remove()
            raise
        finally:
            rt.close_netlink()
        hold(self, rt, state)
        return self

    def hand_over(self) -> int:
        """Give this running lab to a background supervisor, which holds it from now on:
        `tunlab exec/inspect/impair/down NAME` keep working after this process exits (the
        plugin's --tunlab-keep-on-failure). Returns the supervisor's pid; this object is no
        longer running. LabError for a lab with VM nodes (their qemu ends with this process)."""
        from tunlab.topologies import _handover
        from tunlab.topologies._state import release_claim_fd

        with self._teardown:
            rt = self._runtime()
            _handover.refuse_guests(self.name, rt)  # before anything changes
            if self._health is not None:
                self._health.stop()
                self._health = None
            if self._control is not None:
                self._control.close()  # the supervisor serves the socket from now on
                self._control = None
            lock_fd = release_claim_fd(self.id)
            if lock_fd is None:
                raise LabError(f"lab '{self.name}' is not held by this process")
            try:
                pid = _handover.hand_over(self.name, self.source, rt, lock_fd)
            except BaseException:
                from tunlab.topologies._state import adopt_claim

                adopt_claim(self.id, lock_fd)  # still ours: keep holding it as it is
                if self._state is not None:
                    hold(self, rt, self._state)
                raise
            os.close(lock_fd)  # the supervisor holds the same lock
            self._rt = self._state = None
            return pid

    def _dead_parts(self) -> dict[str, str]:
        rt = self._rt
        if rt is None:
            return {}
        out: dict[str, str] = {}
        for (li, ei), relay in list(rt.relays.items()):
            for failure in relay.failures():
                out.setdefault(link_part(rt.topo.links[li], ei), failure)
        for name, handle in list(rt.nodes.items()):
            cause = rt.drivers[name].failure(handle)
            if cause is not None:
                out[f"node {name}"] = cause
        return out

    def _record_health(self, problems: dict[str, str]) -> None:
        state = self._state
        if state is not None:
            state.health = problems
            state.status = "degraded"
            state.save()

    def health(self) -> dict[str, str]:
        """The parts of the lab that died while it ran — a relay worker, a VM's qemu, a
        container, a namespace deleted from outside — each with its cause; {} while all work.
        The holder also checks a few times a second and records them (`tunlab ls` shows the
        lab as degraded)."""
        return self._health.check() if self._health is not None else {}

    def _register(self) -> LabState:
        with registry_lock():
            for other in all_labs():
                if other.name != self.name:
                    continue
                if other.owner_alive:
                    raise LabError(
                        f"a lab named '{self.name}' is already running (held by pid {other.owner_pid}): "
                        f"`tunlab down {self.name}` first, or give this one another name"
                    )
                teardown_state(other)  # its owner died: clean it up and take the name
            claim(self.id)  # held until this process lets go or dies: that is what "alive" means
            state = LabState(
                name=self.name,
                id=self.id,
                owner_pid=os.getpid(),
                owner_start=process_start(os.getpid()),
                topology=self.topology.model_dump(mode="json", by_alias=True),
                source=self.source,
                detached=self.detached,
            )
            state.namespaces = engine.planned_namespaces(self.topology, self.id)
            state.nodes = engine.planned_nodes(self.topology, LabContext(self.id, self.name))
            state.save()
        return state

    def down(self) -> list[str]:
        """Tear everything down; returns the problems met (empty when all went well)."""
        with self._teardown:
            if self._rt is None:
                return []
            rt, state = self._rt, self._state
            if self._health is not None:
                self._health.stop()
                self._health = None
            self._rt = self._state = None
            if self._control is not None:
                self._control.close()
                self._control = None
            problems = rt.release() + remove_namespaces(owned_namespaces(self.id))
            problems += remove_lab_leftovers(self.id)
            if state is not None:
                state.remove()
            self._down.set()
            return problems

    def _stopped_from_outside(self, by: str) -> list[str]:
        """`tunlab down` from another process (through the control socket): tear down here,
        in the holder, without signalling the program; its later calls raise LabStopped."""
        self._stopped_by = by
        return self.down()

    def wait_down(self, timeout: float | None = None) -> bool:
        """Block until the lab is down — down() here, or `tunlab down NAME` from another
        process — or timeout seconds pass; True once it is down. A program that holds a lab
        for others to use waits here (`tunlab up` does)."""
        return self._down.wait(timeout)

    def detach(self) -> None:
        """Let go of the lab without tearing it down: what it made stays, listed in its state
        file, until `tunlab down` or `tunlab gc` (devices and relays end with this process).
        This object is no longer running afterwards."""
        if self._health is not None:
            self._health.stop()
            self._health = None
        self._rt = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __del__(self) -> None:
        if getattr(self, "_rt", None) is not None:
            with contextlib.suppress(Exception):
                self.down()

    # ---- using it ---------------------------------------------------------------------------
    def _runtime(self) -> engine.Runtime:
        if self._rt is None and self._stopped_by is not None:
            raise LabStopped(f"lab '{self.name}' was taken down by {self._stopped_by}")
        if self._rt is None:
            raise LabError(f"lab '{self.name}' is not up: call up() or use `with`")
        return self._rt

    def node(self, name: str) -> NodeHandle:
        """A node: .run(argv), .popen(argv), .socket(family, type), .netns."""
        rt = self._runtime()
        if name not in rt.nodes:
            raise LabError(f"lab '{self.name}' has no node '{name}' (nodes: {', '.join(rt.nodes)})")
        return rt.nodes[name]

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        """Every node's handle, by name."""
        return dict(self._runtime().nodes)

    def device(self, node: str, interface: str) -> SyncDevice:
        """The TUN/TAP device the lab holds for a tun/tap interface or a tun-pair end."""
        rt = self._runtime()
        try:
            return rt.devices[(node, interface)]
        except KeyError:
            raise LabError(
                f"'{node}:{interface}' is not a tun/tap interface or tun-pair end of lab '{self.name}'"
            ) from None

    def link(self, selector: int | str) -> LabLink:
        """A link by index, name or one of its ends ('h1:eth0'): impair(), clear(), stats()."""
        rt = self._runtime()
        return LabLink(rt, find_link(rt, selector))

    @property
    def links(self) -> list[LabLink]:
        """Every link, in the topology's order (impair(), clear(), stats())."""
        rt = self._runtime()
        return [LabLink(rt, li) for li in range(len(rt.topo.links))]

    def relay_stats(self) -> dict[str, dict[str, Any]]:
        """Frames, bytes and super-packets each relay moved, per direction (a bridge port's or a
        vxlan end's relay is labelled with that end)."""
        rt = self._runtime()
        out: dict[str, dict[str, Any]] = {}
        for (li, ei), relay in rt.relays.items():
            link = self.topology.links[li]
            if ei < 0:
                label = " <-> ".join(f"{e.node}:{e.interface}" for e in link.endpoints)
            else:
                ep = link.endpoints[ei]
                label = f"{ep.node}:{ep.interface} (links[{li}] end {ei})"
            out[label] = {k: v.as_dict() for k, v in relay.snapshot().items()}
        return out

    def impairment_stats(self) -> list[dict[str, Any]]:
        """Every link's placement, impairment (as tc prints it) and counters per direction."""
        return [{"link": li.index, "endpoints": li.label, **li.stats()} for li in self.links]

    def inspect(self) -> dict[str, Any]:
        """Live view: nodes, interfaces (addresses, MTU, state, offload), routes, relays."""
        from tunlab.topologies._inspect import inspect_state

        if self._state is None:
            raise LabError(f"lab '{self.name}' is not up")
        data = inspect_state(self._state)
        data["relays"] = self.relay_stats()
        data["impairments"] = self.impairment_stats()
        return data

    def graph(self, format: str = "mermaid") -> str | bytes:
        """The topology as a picture: mermaid or dot text, or svg/png bytes (graphviz)."""
        from tunlab.topologies._graph import render_graph

        return render_graph(self.topology, format)

    def __repr__(self) -> str:
        return f"<Lab {self.name!r} id={self.id} {'up' if self.running else 'down'}>"

    def _serve_control(self, state: LabState) -> ControlServer | None:
        """The control socket for `tunlab impair` / `tunlab inspect` from other processes."""

        def handle(msg: dict[str, Any]) -> dict[str, Any]:
            op = msg.get("op")
            if op == "links":
                return {"ok": True, "links": self.impairment_stats(), "relays": self.relay_stats()}
            if op == "impair":
                with self._teardown:
                    link = self.link(msg.get("link", ""))
                    if msg.get("impair") is None and msg.get("direction") is None:
                        link.clear()
                    else:
                        link.impair(msg.get("impair") or {}, direction=msg.get("direction"))
                    return {"ok": True, "link": link.index, "endpoints": link.label, **link.stats()}
            if op == "down":
                problems = self._stopped_from_outside(str(msg.get("by") or "`tunlab down`"))
                return {"ok": True, "problems": problems}
            if op == "exec":
                import base64

                argv = msg.get("argv")
                if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                    raise ValueError("exec: argv must be a non-empty list of strings")
                done = self.node(str(msg.get("node", ""))).run(argv, timeout=msg.get("timeout"))
                return {"ok": True, "code": done.code, "stdout": base64.b64encode(done.stdout).decode(),
                        "stderr": base64.b64encode(done.stderr).decode()}  # fmt: skip
            raise ValueError(f"unknown request {op!r} (known: impair, links, exec, down)")

        try:
            return ControlServer(state.path.with_suffix(".sock"), handle)
        except OSError:
            return None  # the lab works without it; `tunlab impair` will say the holder does not answer


def hold(lab: Lab, rt: engine.Runtime, state: LabState) -> None:
    """Make lab the holder of a lab that is up (rt, state): record it up, serve its control
    socket and watch its health (up() once it has made it, a supervisor adopting one)."""
    state.status = "up"
    state.save()
    lab._rt, lab._state = rt, state
    lab._control = lab._serve_control(state)
    lab._health = HealthWatch(lab._dead_parts, lab._record_health).start()
