"""Lab: bring a topology up, use its nodes and devices, tear it down leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunlab.devices.sync import SyncDevice
from tunlab.errors import LabError
from tunlab.topologies import engine
from tunlab.topologies.drivers import all_drivers, driver_for
from tunlab.topologies.drivers.base import LabContext, NodeHandle
from tunlab.topologies.drivers.netns import remove_namespace
from tunlab.topologies.loader import load_file
from tunlab.topologies.models import Topology
from tunlab.topologies.state import (
    LabState,
    all_labs,
    new_lab_id,
    owned_namespaces,
    process_start,
    registry_lock,
)


class Lab:
    """A running lab; `with Lab.from_file("lab.yaml") as lab: lab.node("h1").run([...])`."""

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
        base = name or topology.name
        self.name = f"{base}-{self.id}" if unique else base
        self.source = source
        self.progress = progress
        self.detached = False
        self._rt: engine.Runtime | None = None
        self._state: LabState | None = None

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vars: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Lab:
        """A lab from a YAML/TOML/JSON topology file, rendered with vars."""
        return cls(load_file(path, vars), source=str(Path(path).resolve()), **kwargs)

    # ---- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
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
            _remove_namespaces(owned_namespaces(self.id))  # a namespace made by a failed step
            state.remove()
            raise
        finally:
            rt.close_netlink()
        state.status = "up"
        state.save()
        self._rt, self._state = rt, state
        return self

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
        if self._rt is None:
            return []
        rt, state = self._rt, self._state
        self._rt = self._state = None
        problems = rt.release() + _remove_namespaces(owned_namespaces(self.id))
        if state is not None:
            state.remove()
        return problems

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

    def relay_stats(self) -> dict[str, dict[str, Any]]:
        """Frames, bytes and super-packets each tun-pair relay moved, per direction."""
        rt = self._runtime()
        out: dict[str, dict[str, Any]] = {}
        for li, relay in rt.relays.items():
            link = self.topology.links[li]
            label = " <-> ".join(f"{e.node}:{e.interface}" for e in link.endpoints)
            out[label] = {k: v.as_dict() for k, v in relay.snapshot().items()}
        return out

    def inspect(self) -> dict[str, Any]:
        """Live view: nodes, interfaces (addresses, MTU, state, offload), routes, relays."""
        from tunlab.topologies.inspect import inspect_state

        if self._state is None:
            raise LabError(f"lab '{self.name}' is not up")
        data = inspect_state(self._state)
        data["relays"] = self.relay_stats()
        return data

    def graph(self, format: str = "mermaid") -> str | bytes:
        """The topology as a picture: mermaid or dot text, or svg/png bytes (graphviz)."""
        from tunlab.topologies.graph import render_graph

        return render_graph(self.topology, format)

    def __repr__(self) -> str:
        return f"<Lab {self.name!r} id={self.id} {'up' if self.running else 'down'}>"


# ---- labs held by other (possibly dead) processes ------------------------------------------------
def _remove_namespaces(names: Iterable[str]) -> list[str]:
    """Delete these namespaces (one already gone is fine); returns the failures."""
    return [p for p in (remove_namespace(name) for name in names) if p]


def _kill_relays(workers: list[list[Any]]) -> None:
    """SIGKILL a dead lab's relay workers: only a process with the recorded start time running
    tunlab's worker script (a reused pid is someone else's)."""
    from tunlab.relay.relay import WORKER

    for pid, start in workers:
        if process_start(pid) != start:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if WORKER.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def teardown_state(state: LabState) -> list[str]:
    """Remove what a lab's state file says it made (its owner is gone); returns problems."""
    problems: list[str] = []
    _kill_relays(state.relay_workers)
    ctx = LabContext(state.id, state.name)
    for name, record in state.nodes.items():
        kind = str(record.get("kind", "netns"))
        try:
            problems += driver_for(kind).reap(ctx, name, record)
        except LabError as exc:
            problems.append(f"node {name}: {exc}")
    problems += _remove_namespaces(sorted(set(state.namespaces) | set(owned_namespaces(state.id))))
    state.remove()
    return problems


def stop_lab(name: str, timeout: float = 30.0) -> list[str]:
    """`tunlab down NAME`: ask the holder to tear down (SIGTERM), or clean up if it is gone."""
    state = LabState.load(name)
    if state is None:
        raise LabError(f"no lab named '{name}' is running (see `tunlab ls`)")
    if state.owner_alive:
        os.kill(state.owner_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if LabState.load(name) is None:
                return []
            time.sleep(0.05)
        if state.owner_alive:
            raise LabError(
                f"lab '{name}': its holder (pid {state.owner_pid}) did not stop within {timeout:.0f} s"
            )
    with registry_lock():
        return teardown_state(state)


def garbage_collect() -> list[str]:
    """`tunlab gc`: remove labs whose holder died (SIGKILL included) and orphaned objects."""
    removed: list[str] = []
    with registry_lock():
        live_ids = set()
        for state in all_labs():
            if state.owner_alive:
                live_ids.add(state.id)
                continue
            teardown_state(state)
            removed.append(f"lab {state.name} (id {state.id}, holder pid {state.owner_pid} is gone)")
        for driver in all_drivers():
            removed += driver.orphans(live_ids)
    return removed
