"""Plan a lab as named steps, apply them in order, and roll back everything on failure.

Each step does one thing (create a node, a link, configure an interface, add routes, start a
relay) and knows how to undo what it made. Netlink requests go through one IPRoute per
namespace for the whole deploy: no fork, no `ip` process per step.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunlab.devices.builder import DeviceBuilder
from tunlab.devices.layer import Layer
from tunlab.devices.sync import SyncDevice
from tunlab.errors import DeployError, LabError
from tunlab.linux import ethtool
from tunlab.linux.netlink import NetlinkSession, indexes
from tunlab.linux.netns import NetNamespace
from tunlab.relay.relay import Relay
from tunlab.topologies.drivers import driver_for
from tunlab.topologies.drivers.base import LabContext, NodeDriver, NodeHandle
from tunlab.topologies.drivers.sysctls import write_sysctls
from tunlab.topologies.models import Link, NodeBase, OffloadFeatures, Topology
from tunlab.topologies.state import LabState, bridge_ns_name, process_start
from tunlab.topologies.validate import Catalog, Iface, catalog

if TYPE_CHECKING:
    from pyroute2 import IPRoute

Progress = Callable[[str, int, int], None]
FailureHook = Callable[[str], None]
FAILURE_HOOK: FailureHook | None = None  # tests set this to fail a chosen step


@dataclass
class Step:
    name: str
    apply: Callable[[], None]
    undo: Callable[[], None] | None = None


class Runtime:
    """What a lab holds while it runs: nodes, bridge namespaces, devices and relays."""

    def __init__(self, topo: Topology, lab_id: str, state: LabState) -> None:
        self.topo = topo
        self.lab_id = lab_id
        self.state = state
        self.nodes: dict[str, NodeHandle] = {}
        self.drivers: dict[str, NodeDriver] = {}
        self.bridges: dict[str, NetNamespace] = {}
        self.devices: dict[tuple[str, str], SyncDevice] = {}
        self.relays: dict[int, Relay] = {}
        self.resolved: dict[str, NodeBase] = dict(topo.resolved_nodes())
        self.ctx = LabContext(lab_id, state.name)
        self.catalog: Catalog = catalog(topo)
        self._ipr: dict[str, IPRoute] = {}
        self._batch: dict[str, NetlinkSession] = {}

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
            _try(problems, relay.stop)
        self.relays.clear()
        for dev in self.devices.values():
            _try(problems, dev.close)
        self.devices.clear()
        for name, handle in list(self.nodes.items()):
            _try(problems, functools.partial(self.drivers[name].destroy, handle))
        self.nodes.clear()
        for ns in self.bridges.values():
            _try(problems, ns.delete)
        self.bridges.clear()
        return problems


def _try(problems: list[str], fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")


# ---- planning ------------------------------------------------------------------------------
def planned_namespaces(topo: Topology, lab_id: str) -> list[str]:
    """The namespaces the engine itself makes (bridges); nodes' resources come from drivers."""
    return [
        bridge_ns_name(lab_id, link.name or f"br{li}")
        for li, link in enumerate(topo.links)
        if link.type == "bridge"
    ]


def planned_nodes(topo: Topology, ctx: LabContext) -> dict[str, dict[str, Any]]:
    """{node: {kind, ...what its driver will make}} for the state file, before anything exists."""
    return {
        name: {"kind": node.kind, **driver_for(node.kind).planned(ctx, name, node)}
        for name, node in topo.resolved_nodes().items()
    }


def plan(rt: Runtime) -> list[Step]:
    """The ordered steps that bring the lab up (checks every node kind is available first)."""
    by_kind: dict[str, dict[str, NodeBase]] = {}
    for name, node in rt.resolved.items():
        driver = driver_for(node.kind)
        driver.check_available()
        rt.drivers[name] = driver
        by_kind.setdefault(node.kind, {})[name] = node
    steps: list[Step] = []
    for kind, nodes in by_kind.items():
        driver = driver_for(kind)
        if driver.parallel:
            steps.append(
                Step(
                    f"create {kind} nodes {', '.join(nodes)}",
                    functools.partial(_create_nodes, rt, driver, nodes),
                    functools.partial(_destroy_nodes, rt, list(nodes)),
                )
            )
            continue
        for name, node in nodes.items():
            steps.append(
                Step(
                    f"create {kind} node {name}",
                    functools.partial(_create_nodes, rt, driver, {name: node}),
                    functools.partial(_destroy_nodes, rt, [name]),
                )
            )
    vxlans, tun_pairs = [], []
    for li, link in enumerate(rt.topo.links):
        ends = [rt.catalog.ifaces[(e.node, e.interface)] for e in link.endpoints]
        label = " <-> ".join(f"{e.node}:{e.name}" for e in ends)
        if link.type == "veth":
            steps.append(Step(f"veth {label}", functools.partial(_veth, rt, ends[0], ends[1])))
        elif link.type == "tun-pair":
            tun_pairs.append((li, link, ends, label))
            steps.append(
                Step(
                    f"tun-pair {label}",
                    functools.partial(_tun_pair, rt, li, link, ends),
                    functools.partial(_close_devices, rt, ends),
                )
            )
        elif link.type == "bridge":
            br = link.name or f"br{li}"
            steps.append(
                Step(
                    f"bridge {br}",
                    functools.partial(_bridge, rt, br),
                    functools.partial(_drop_bridge, rt, br),
                )
            )
            for end in ends:
                steps.append(
                    Step(
                        f"bridge {br} port {end.node}:{end.name}",
                        functools.partial(_bridge_port, rt, br, end),
                    )
                )
        elif link.type == "vxlan":
            vxlans.append((li, link, ends, label))
    for iface in rt.catalog.ifaces.values():
        if iface.link_index is None:
            steps.append(
                Step(
                    f"{iface.kind} {iface.node}:{iface.name}",
                    functools.partial(_tuntap, rt, iface),
                    functools.partial(_close_devices, rt, [iface]),
                )
            )
    for name in rt.resolved:
        # tun/tap devices are configured when they are built; vxlan ends after their tunnel
        plain = [
            i
            for i in rt.catalog.of_node(name)
            if i.link_type != "vxlan" and i.kind not in ("tun", "tap", "tun-pair")
        ]
        if plain:
            steps.append(
                Step(f"configure interfaces of {name}", functools.partial(_configure, rt, name, plain))
            )
    for _li, link, ends, label in vxlans:
        steps.append(Step(f"vxlan {label}", functools.partial(_vxlan, rt, link, ends)))
        for end in ends:
            steps.append(
                Step(f"configure {end.node}:{end.name}", functools.partial(_configure, rt, end.node, [end]))
            )
    for name, node in rt.resolved.items():
        if node.sysctls:
            steps.append(Step(f"sysctls of {name}", functools.partial(_sysctls, rt, name, node)))
        if node.routes:
            steps.append(Step(f"routes of {name}", functools.partial(_routes, rt, name, node)))
    for li, link, ends, label in tun_pairs:
        steps.append(
            Step(
                f"relay {label}",
                functools.partial(_start_relay, rt, li, link, ends),
                functools.partial(_stop_relay, rt, li),
            )
        )
    for name, node in rt.resolved.items():
        for argv in node.exec:
            steps.append(Step(f"exec on {name}: {' '.join(argv)}", functools.partial(_exec, rt, name, argv)))
    for name, node in rt.resolved.items():
        if node.healthcheck is not None:
            steps.append(Step(f"wait for {name}", functools.partial(_wait_ready, rt, name, node)))
    return steps


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
            raise DeployError(step.name, exc) from exc
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


# ---- the steps -----------------------------------------------------------------------------
def _create_nodes(rt: Runtime, driver: NodeDriver, nodes: dict[str, NodeBase]) -> None:
    made = driver.create_many(rt.ctx, nodes)
    rt.nodes.update(made)
    for name, handle in made.items():
        rt.state.nodes[name] = {"kind": driver.kind, **driver.resources(handle)}


def _destroy_nodes(rt: Runtime, names: list[str]) -> None:
    """Undo: remove the nodes this process holds, and whatever a half-done step left."""
    rt.close_netlink()
    for name in names:
        handle = rt.nodes.pop(name, None)
        driver = rt.drivers[name]
        if handle is not None:
            driver.destroy(handle)
        else:
            driver.reap(rt.ctx, name, rt.state.nodes.get(name, {}))


def _wait_ready(rt: Runtime, name: str, node: NodeBase) -> None:
    rt.drivers[name].wait_ready(rt.nodes[name], node)


def _sysctls(rt: Runtime, name: str, node: NodeBase) -> None:
    rt.netns(name).call(write_sysctls, node, early=False)


def _veth(rt: Runtime, a: Iface, b: Iface) -> None:
    ns_a, ns_b = rt.netns(a.node), rt.netns(b.node)
    batch = rt.batch(ns_a)
    batch.add_veth(a.name, b.name, ns_b, f"creating veth {a.node}:{a.name} <-> {b.node}:{b.name}")
    batch.commit()


def _device(rt: Runtime, iface: Iface, builder: DeviceBuilder) -> None:
    """Build a tun/tap device with all its settings: created and configured in one go."""
    s = iface.settings
    builder.name(iface.name).netns(rt.netns(iface.node)).enable(True)
    if s.mtu is not None:
        builder.mtu(s.mtu)
    if s.mac is not None:
        builder.mac_addr(s.mac)
    for v4 in s.ipv4:
        builder.ipv4(v4.ip, v4.network.prefixlen)
    for v6 in s.ipv6:
        builder.ipv6(v6.ip, v6.network.prefixlen)
    rt.devices[(iface.node, iface.name)] = builder.build_sync()


def _tun_pair(rt: Runtime, li: int, link: Link, ends: list[Iface]) -> None:
    for end in ends:
        _device(rt, end, DeviceBuilder().offload(link.offload))


def _close_devices(rt: Runtime, ends: list[Iface]) -> None:
    for end in ends:
        dev = rt.devices.pop((end.node, end.name), None)
        if dev is not None:
            dev.close()


def _tuntap(rt: Runtime, iface: Iface) -> None:
    s = iface.settings
    builder = DeviceBuilder()
    if s.type == "tap":
        builder.layer(Layer.L2)
    if isinstance(s.offload, bool):
        builder.offload(s.offload)
    if s.multi_queue:
        builder.multi_queue(True)
    _device(rt, iface, builder)


def _bridge(rt: Runtime, br: str) -> None:
    ns = NetNamespace.create(bridge_ns_name(rt.lab_id, br))
    rt.bridges[br] = ns
    ipr = rt.ipr(ns)
    ipr.link("add", ifname=br, kind="bridge")
    ipr.link("set", index=rt.index(ns, br), state="up")


def _drop_bridge(rt: Runtime, br: str) -> None:
    ns = rt.bridges.pop(br, None)
    rt.close_netlink()
    if ns is not None:
        ns.delete()


def _bridge_port(rt: Runtime, br: str, end: Iface) -> None:
    sw = rt.bridges[br]
    port = f"p{end.endpoint_index}-{end.node}"[:15]
    ipr = rt.ipr(sw)
    ipr.link(
        "add",
        ifname=port,
        kind="veth",
        peer={"ifname": end.name, "net_ns_fd": rt.netns(end.node).path},
    )
    kwargs: dict[str, Any] = {"master": rt.index(sw, br), "state": "up"}
    if end.settings.mtu is not None:
        kwargs["mtu"] = end.settings.mtu
    ipr.link("set", index=rt.index(sw, port), **kwargs)


def _vxlan(rt: Runtime, link: Link, ends: list[Iface]) -> None:
    for i, end in enumerate(ends):
        ep, other_ep = link.endpoints[i], link.endpoints[1 - i]
        ns = rt.netns(end.node)
        assert ep.underlay is not None
        assert other_ep.underlay is not None
        under = rt.catalog.ifaces[(end.node, ep.underlay)]
        remote = ep.remote
        if remote is None:
            peer = rt.catalog.ifaces[(other_ep.node, other_ep.underlay)]
            remote = peer.addresses[0].ip
        local = next((a.ip for a in under.addresses if a.version == remote.version), None)
        kwargs: dict[str, Any] = {
            "ifname": end.name,
            "kind": "vxlan",
            "vxlan_id": link.vni,
            "vxlan_port": link.port,
            "vxlan_link": rt.index(ns, ep.underlay),
        }
        if remote.version == 4:
            kwargs["vxlan_group"] = str(remote)
            if local is not None:
                kwargs["vxlan_local"] = str(local)
        else:
            kwargs["vxlan_group6"] = str(remote)
            if local is not None:
                kwargs["vxlan_local6"] = str(local)
        rt.ipr(ns).link("add", **kwargs)


def _configure(rt: Runtime, node: str, ifaces: list[Iface]) -> None:
    """MTU, MAC, offload features, up, addresses of a node's interfaces: one netlink batch."""
    ns = rt.netns(node)
    index = indexes(ns, [i.name for i in ifaces])
    for iface in ifaces:  # ethtool features first: switching some needs the link down
        features = _wanted_features(iface)
        if features:
            rt.state.offload_original[f"{node}:{iface.name}"] = ethtool.read_features(ns, iface.name)
            ethtool.set_features(ns, iface.name, features)
    batch = rt.batch(ns)
    for iface in ifaces:
        s = iface.settings
        where = f"{node}:{iface.name}"
        # up before addresses: an IPv6 address added to a running link joins its solicited-node
        # group at once, so the first neighbour solicitation is answered (no 1 s retransmit)
        batch.set_link(index[iface.name], f"setting up {where}", up=True, mtu=s.mtu, mac=s.mac)
        l2 = iface.kind not in ("tun", "tun-pair")
        for addr in iface.addresses:
            batch.add_address(index[iface.name], addr, f"adding address {addr} to {where}", broadcast=l2)
    batch.commit()


def _wanted_features(iface: Iface) -> dict[str, bool]:
    off = iface.settings.offload
    if isinstance(off, OffloadFeatures):
        return off.wanted()
    if isinstance(off, bool) and iface.kind not in ("tun", "tap", "tun-pair"):
        return dict.fromkeys(("gro", "gso", "tso", "tx-checksum"), off)
    return {}


def _routes(rt: Runtime, name: str, node: NodeBase) -> None:
    ns = rt.netns(name)
    devs = [r.dev for r in node.routes if r.dev is not None and r.dev != "lo"]
    index = indexes(ns, sorted(set(devs))) if devs else {}
    batch = rt.batch(ns)
    for route in node.routes:
        oif = index.get(route.dev) if route.dev else None
        target = f" via {route.via}" if route.via is not None else f" dev {route.dev}"
        batch.add_route(
            route.network(),
            f"route {route.dst}{target} in '{name}'",
            via=route.via,
            oif=oif,
            metric=route.metric,
        )
    batch.commit()


def _start_relay(rt: Runtime, li: int, link: Link, ends: list[Iface]) -> None:
    a = rt.devices[(ends[0].node, ends[0].name)]
    b = rt.devices[(ends[1].node, ends[1].name)]
    relay = Relay(a, b, workers=link.workers, name=f"tun-pair-{li}").start()
    rt.relays[li] = relay
    rt.state.relay_workers.extend([pid, process_start(pid)] for pid in relay.pids)


def _stop_relay(rt: Runtime, li: int) -> None:
    relay = rt.relays.pop(li, None)
    if relay is not None:
        relay.stop()


def _exec(rt: Runtime, name: str, argv: list[str]) -> None:
    try:
        result = rt.nodes[name].run(argv, timeout=120)
    except FileNotFoundError:
        raise LabError(f"exec on '{name}': command {argv[0]!r} not found") from None
    if result.code != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"exec on '{name}': {' '.join(argv)} exited {result.code}: {' | '.join(tail)}")
