"""Plan a lab as named steps, apply them in order, and roll back everything on failure.

The plan is a short walk: each node kind's driver and each link type (links/) give the steps
of their own nodes and links, each in its phase (runtime.Phase); the walk adds what belongs to
nodes (their own tun/tap devices, interface configuration, sysctls, routes, exec:,
healthchecks) and sorts the steps by phase. Each step knows how to undo what it made.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

from tunlab._linux.netlink import indexes
from tunlab.devices._builder import DeviceBuilder
from tunlab.devices._layer import Layer
from tunlab.errors import DeployError, LabError
from tunlab.topologies import _impairments as impairments
from tunlab.topologies._catalog import Iface
from tunlab.topologies._drivers import driver_for
from tunlab.topologies._drivers.base import LabContext, NodeDriver
from tunlab.topologies._drivers.sysctls import write_sysctls
from tunlab.topologies._fieldpath import format_path
from tunlab.topologies._fields import NodeBase
from tunlab.topologies._interfaces import configure
from tunlab.topologies._links import link_type, type_of
from tunlab.topologies._links.wiring import build_device, close_devices
from tunlab.topologies._models import Topology
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step, destroy_nodes

__all__ = ["FAILURE_HOOK", "Phase", "Runtime", "Step", "apply", "plan", "planned_namespaces", "planned_nodes"]

Progress = Callable[[str, int, int], None]
FailureHook = Callable[[str], None]
FAILURE_HOOK: FailureHook | None = None  # tests set this to fail a chosen step


# ---- planning ------------------------------------------------------------------------------
def planned_namespaces(topo: Topology, lab_id: str) -> list[str]:
    """The namespaces the engine itself makes (for links); nodes' resources come from drivers."""
    return [
        ns
        for li, link in enumerate(topo.links)
        for ns in link_type(link.type).planned_namespaces(lab_id, li, link)
    ]


def planned_nodes(topo: Topology, ctx: LabContext) -> dict[str, dict[str, Any]]:
    """{node: {kind, ...what its driver will make}} for the state file, before anything exists."""
    return {
        name: {"kind": node.kind, **driver_for(node.kind).planned(ctx, name, node)}
        for name, node in topo.resolved_nodes().items()
    }


def plan(rt: Runtime) -> list[Step]:
    """The ordered steps that bring the lab up (checks every node kind is available first)."""
    for name, node in rt.resolved.items():
        rt.drivers[name] = driver_for(node.kind)
        rt.drivers[name].check_available()
    rt.guests = {n for n, d in rt.drivers.items() if d.interfaces_in_guest}
    place_impairments(rt)
    planned: list[PlannedStep] = _node_steps(rt)
    for li in range(len(rt.topo.links)):
        for phase, step in type_of(rt, li).steps(rt, li):
            step.field = step.field or f"links[{li}]"
            planned.append((phase, step))
    planned += _device_steps(rt) + _guest_steps(rt) + _configure_steps(rt) + _late_node_steps(rt)
    return [step for _phase, step in sorted(planned, key=lambda p: p[0])]  # stable within a phase


def _node_steps(rt: Runtime) -> list[PlannedStep]:
    """Create the nodes: all of a kind in one step where its driver works in parallel."""
    by_kind: dict[str, dict[str, NodeBase]] = {}
    for name, node in rt.resolved.items():
        by_kind.setdefault(node.kind, {})[name] = node
    out: list[PlannedStep] = []
    for kind, nodes in by_kind.items():
        driver = driver_for(kind)
        groups = [nodes] if driver.parallel else [{n: v} for n, v in nodes.items()]
        for group in groups:
            what = (
                f"{kind} nodes {', '.join(group)}" if driver.parallel else f"{kind} node {next(iter(group))}"
            )
            out.append(
                (
                    Phase.NODES,
                    Step(
                        f"create {what}",
                        functools.partial(_create_nodes, rt, driver, group),
                        functools.partial(_destroy_nodes, rt, list(group)),
                    ),
                )
            )
    return out


def _device_steps(rt: Runtime) -> list[PlannedStep]:
    """The tun/tap devices declared under nodes (built configured)."""
    return [
        (
            Phase.DEVICES,
            Step(
                f"{iface.kind} {iface.node}:{iface.name}",
                functools.partial(_tuntap, rt, iface),
                functools.partial(close_devices, rt, [(iface.node, iface.name)]),
                format_path(iface.loc),
            ),
        )
        for iface in rt.catalog.ifaces.values()
        if iface.link_index is None
    ]


def _guest_steps(rt: Runtime) -> list[PlannedStep]:
    """VMs boot once their NICs' devices exist, then are configured from inside."""
    if not rt.guests:
        return []
    names = sorted(rt.guests)
    out: list[PlannedStep] = [
        (
            Phase.GUESTS,
            Step(
                f"boot vm nodes {', '.join(names)}",
                functools.partial(_boot_guests, rt, names),
                functools.partial(_destroy_nodes, rt, names),
            ),
        )
    ]
    for name in names:
        out.append(
            (Phase.GUESTS, Step(f"configure vm node {name}", functools.partial(_configure_guest, rt, name)))
        )
    return out


def _configure_steps(rt: Runtime) -> list[PlannedStep]:
    """Each node's interfaces that netlink configures, in one batch per node."""
    out: list[PlannedStep] = []
    for name in rt.resolved:
        if name in rt.guests:
            continue  # configured inside the guest
        ifaces = [
            i
            for i in rt.catalog.of_node(name)
            if i.link_index is not None and type_of(rt, i.link_index).configured_by_netlink(rt, i)
        ]
        if ifaces:
            out.append(
                (
                    Phase.CONFIGURE,
                    Step(f"configure interfaces of {name}", functools.partial(configure, rt, name, ifaces)),
                )
            )
    return out


def _late_node_steps(rt: Runtime) -> list[PlannedStep]:
    """sysctls and routes, the topology's exec: commands, and healthchecks."""
    out: list[PlannedStep] = []
    for name, node in rt.resolved.items():
        if name in rt.guests:
            continue
        if node.sysctls:
            out.append(
                (Phase.ROUTES, Step(f"sysctls of {name}", functools.partial(_sysctls, rt, name, node)))
            )
        if node.routes:
            out.append((Phase.ROUTES, Step(f"routes of {name}", functools.partial(_routes, rt, name, node))))
    for name, node in rt.resolved.items():
        for argv in node.exec:
            out.append(
                (
                    Phase.EXEC,
                    Step(f"exec on {name}: {' '.join(argv)}", functools.partial(_exec, rt, name, argv)),
                )
            )
        if node.healthcheck is not None:
            out.append(
                (Phase.READY, Step(f"wait for {name}", functools.partial(_wait_ready, rt, name, node)))
            )
    return out


def apply(steps: list[Step], *, progress: Progress | None = None, fail_at: FailureHook | None = None) -> None:
    """Run steps in order; on failure undo what was done (reverse order) and raise DeployError."""
    done: list[Step] = []
    hook = fail_at or FAILURE_HOOK or _env_failure_hook()
    for i, step in enumerate(steps):
        if progress is not None:
            progress(step.name, i, len(steps))
        try:
            if hook is not None:
                hook(step.name)
            step.apply()
        except BaseException as exc:
            done.append(step)  # a half-done step may have made something: undo it too
            for past in reversed(done):
                if past.undo is not None:
                    # keep undoing on errors: namespaces removed last take the rest with them
                    with contextlib.suppress(Exception):
                        past.undo()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise DeployError(step.name, exc, step.field) from exc
        done.append(step)
    if progress is not None:
        progress("done", len(steps), len(steps))


def _env_failure_hook() -> FailureHook | None:
    """TUNLAB_FAIL_AT=<text>: fail the first step whose name contains text (rollback testing).

    TUNLAB_KILL_AT=<step name>: SIGKILL this process just before that step runs (a trailing `*`
    matches a prefix), leaving what the steps before it made: what a crash leaves for `tunlab gc`.
    """
    kill = os.environ.get("TUNLAB_KILL_AT")
    if kill:

        def killer(name: str) -> None:
            if name == kill or (kill.endswith("*") and name.startswith(kill[:-1])):
                os.kill(os.getpid(), signal.SIGKILL)

        return killer
    needle = os.environ.get("TUNLAB_FAIL_AT")
    if not needle:
        return None

    def hook(name: str) -> None:
        if needle in name:
            raise LabError(f"injected failure (TUNLAB_FAIL_AT={needle!r})")

    return hook


# ---- the steps of nodes ------------------------------------------------------------------
def _create_nodes(rt: Runtime, driver: NodeDriver, nodes: dict[str, NodeBase]) -> None:
    made = driver.create_many(rt.ctx, nodes)
    rt.nodes.update(made)
    for name, handle in made.items():
        rt.state.nodes[name] = {"kind": driver.kind, **driver.resources(handle)}


def _destroy_nodes(rt: Runtime, names: list[str]) -> None:
    """Undo: remove the nodes this process holds, and whatever a half-done step left."""
    rt.close_netlink()
    held = {name: rt.nodes.pop(name) for name in names if name in rt.nodes}
    problems = destroy_nodes(rt.drivers, held)
    for name in names:
        if name not in held:
            problems += rt.drivers[name].reap(rt.ctx, name, rt.state.nodes.get(name, {}))
    if problems:
        raise LabError("; ".join(problems))


def _wait_ready(rt: Runtime, name: str, node: NodeBase) -> None:
    rt.drivers[name].wait_ready(rt.nodes[name], node)


def _sysctls(rt: Runtime, name: str, node: NodeBase) -> None:
    rt.netns(name).call(write_sysctls, node, early=False, where=f"nodes.{name}.sysctls")


def _tuntap(rt: Runtime, iface: Iface) -> None:
    """A tun/tap interface declared under a node: a device the lab holds."""
    s = iface.settings
    builder = DeviceBuilder()
    if s.type == "tap":
        builder.layer(Layer.L2)
    if isinstance(s.offload, bool):
        builder.offload(s.offload)
    if s.multi_queue:
        builder.multi_queue(True)
    build_device(rt, iface, builder)


def _boot_guests(rt: Runtime, names: list[str]) -> None:
    driver = rt.drivers[names[0]]
    handles = {n: rt.nodes[n] for n in names}
    driver.start_many(handles)
    for name, handle in handles.items():
        rt.state.nodes[name] = {"kind": driver.kind, **driver.resources(handle)}
    with contextlib.suppress(OSError):
        rt.state.save()  # qemu's pid and start time, for gc after a crash


def _configure_guest(rt: Runtime, name: str) -> None:
    ifaces = rt.catalog.of_node(name)
    rt.drivers[name].configure(rt.nodes[name], ifaces, rt.resolved[name])


def _routes(rt: Runtime, name: str, node: NodeBase) -> None:
    ns = rt.netns(name)
    devs = [r.dev for r in node.routes if r.dev is not None]
    index = indexes(ns, sorted(set(devs))) if devs else {}
    batch = rt.batch(ns)
    for ri, route in enumerate(node.routes):
        oif = index.get(route.dev) if route.dev else None
        target = f" via {route.via}" if route.via is not None else f" dev {route.dev}"
        batch.add_route(
            route.network(),
            f"nodes.{name}.routes[{ri}]: route {route.dst}{target} in '{name}'",
            via=route.via,
            oif=oif,
            metric=route.metric,
        )
    batch.commit()


def place_impairments(rt: Runtime) -> None:
    """Where each link's impairment runs (before anything is made: impair_via: kernel that the
    kernel cannot meet fails here, naming the link)."""
    wants_kernel = any(
        link.impair is not None and not link_type(link.type).own_relay and link.impair_via != "relay"
        for link in rt.topo.links
    )
    qdiscs = impairments.kernel_qdiscs(f"tl-{rt.lab_id}-qprobe") if wants_kernel else frozenset()
    for li, link in enumerate(rt.topo.links):
        try:
            rt.placements[li] = link_type(link.type).placement(link, qdiscs)
        except LabError as exc:
            raise LabError(f"links[{li}]: {exc}") from None
        rt.impairs[li] = link.impairment
    rt.state.impairments = {
        str(li): {"via": p.via, "reason": p.reason, **impairments.describe(rt.impairs[li])}
        for li, p in rt.placements.items()
        if p.via != "none" or rt.impairs[li] is not None
    }


def _exec(rt: Runtime, name: str, argv: list[str]) -> None:
    try:
        result = rt.nodes[name].run(argv, timeout=120)
    except FileNotFoundError:
        raise LabError(f"exec on '{name}': command {argv[0]!r} not found") from None
    if result.code != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"exec on '{name}': {' '.join(argv)} exited {result.code}: {' | '.join(tail)}")
