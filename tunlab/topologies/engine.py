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
from tunlab.relay.impair.model import LinkImpairment
from tunlab.relay.relay import Relay
from tunlab.topologies import impairments
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
        # (link index, endpoint index) -> relay; endpoint -1: the relay of the whole link
        self.relays: dict[tuple[int, int], Relay] = {}
        self.placements: dict[int, impairments.Placement] = {}
        self.guests: set[str] = set()  # nodes whose interfaces live in a guest kernel (VMs)
        self.impairs: dict[int, LinkImpairment | None] = {}
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
    _place_impairments(rt)
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
    guests = {n for n, d in rt.drivers.items() if d.interfaces_in_guest}
    rt.guests = guests
    vxlans, tun_pairs, kernel_impaired = [], [], []
    for li, link in enumerate(rt.topo.links):
        ends = [rt.catalog.ifaces[(e.node, e.interface)] for e in link.endpoints]
        label = " <-> ".join(f"{e.node}:{e.name}" for e in ends)
        relayed = rt.placements[li].via == "inserted"
        to_guest = any(e.node in guests for e in ends)
        if rt.placements[li].via == "kernel":
            kernel_impaired.append((li, link, ends, label))
        if (link.type == "veth" and relayed) or (link.type == "tun-pair" and to_guest):
            tun_pairs.append((li, link, ends, label))
            why = "a relay carries the impairment" if relayed else "a VM's NIC is Ethernet: TAP devices"
            steps.append(
                Step(
                    f"tap-pair {label} ({why})",
                    functools.partial(_tap_pair, rt, li, ends),
                    functools.partial(_close_devices, rt, ends),
                )
            )
        elif link.type == "veth" and to_guest:
            steps.append(Step(f"veth {label} (TAP to a VM)", functools.partial(_guest_veth, rt, li, ends)))
        elif link.type == "veth":
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
                if relayed:
                    steps.append(
                        Step(
                            f"bridge {br} port {end.node}:{end.name} (tap pair with a relay)",
                            functools.partial(_bridge_tap_port, rt, li, br, end),
                            functools.partial(_close_port, rt, li, br, end),
                        )
                    )
                    continue
                if end.node in guests:
                    steps.append(
                        Step(
                            f"bridge {br} port {end.node}:{end.name} (TAP to a VM)",
                            functools.partial(_bridge_guest_port, rt, br, end),
                        )
                    )
                    continue
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
    if guests:
        names = sorted(guests)
        steps.append(
            Step(
                f"boot vm nodes {', '.join(names)}",
                functools.partial(_boot_guests, rt, names),
                functools.partial(_destroy_nodes, rt, names),
            )
        )
        for name in names:
            steps.append(Step(f"configure vm node {name}", functools.partial(_configure_guest, rt, name)))
    for name in rt.resolved:
        if name in guests:
            continue  # configured inside the guest
        # tun/tap devices are configured when they are built; vxlan ends after their tunnel
        plain = [
            i
            for i in rt.catalog.of_node(name)
            if i.link_type != "vxlan" and i.kind not in ("tun", "tap", "tun-pair")
        ]
        # a tun-pair to a VM is TAP devices: configured like a veth end
        plain += [
            i
            for i in rt.catalog.of_node(name)
            if i.kind == "tun-pair"
            and i.link_index is not None
            and any(e.node in guests for e in rt.topo.links[i.link_index].endpoints)
        ]
        if plain:
            steps.append(
                Step(f"configure interfaces of {name}", functools.partial(_configure, rt, name, plain))
            )
    for li, link, ends, label in vxlans:
        if rt.placements[li].via == "inserted":
            steps.append(
                Step(
                    f"vxlan {label} (with a relay for the impairment)",
                    functools.partial(_vxlan_relayed, rt, li, link, ends),
                    functools.partial(_close_vxlan_relays, rt, li, ends),
                )
            )
        else:
            steps.append(Step(f"vxlan {label}", functools.partial(_vxlan, rt, link, ends)))
        for end in ends:
            steps.append(
                Step(f"configure {end.node}:{end.name}", functools.partial(_configure, rt, end.node, [end]))
            )
    for name, node in rt.resolved.items():
        if name in guests:
            continue
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
    for li, link, ends, label in kernel_impaired:
        steps.append(
            Step(
                f"impair {label} (kernel qdiscs)",
                functools.partial(_impair_kernel, rt, li, link, ends, link.impairment),
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


def _place_impairments(rt: Runtime) -> None:
    """Where each link's impairment runs (before anything is made: impair_via: kernel that the
    kernel cannot meet fails here, naming the link)."""
    wants_kernel = any(
        link.impair is not None and link.type != "tun-pair" and link.impair_via != "relay"
        for link in rt.topo.links
    )
    qdiscs = impairments.kernel_qdiscs(f"tl-{rt.lab_id}-qprobe") if wants_kernel else frozenset()
    for li, link in enumerate(rt.topo.links):
        try:
            rt.placements[li] = impairments.place(link, qdiscs)
        except LabError as exc:
            raise LabError(f"links[{li}]: {exc}") from None
        rt.impairs[li] = link.impairment
    rt.state.impairments = {
        str(li): {"via": p.via, "reason": p.reason, **impairments.describe(rt.impairs[li])}
        for li, p in rt.placements.items()
        if p.via != "none" or rt.impairs[li] is not None
    }


def _start_relay(rt: Runtime, li: int, link: Link, ends: list[Iface]) -> None:
    a = rt.devices[(ends[0].node, ends[0].name)]
    b = rt.devices[(ends[1].node, ends[1].name)]
    _start(rt, (li, -1), a, b, link.workers, rt.impairs.get(li), f"{link.type}-{li}")


def _start(
    rt: Runtime,
    key: tuple[int, int],
    a: SyncDevice,
    b: SyncDevice,
    workers: str,
    impair: LinkImpairment | dict[str, Any] | None,
    name: str,
) -> None:
    """An impairable relay between two devices (impaired from the start if impair is set)."""
    chosen = impair.params() if isinstance(impair, LinkImpairment) else impair
    relay = Relay(a, b, workers=workers, name=name, impair=chosen, impairable=True).start()
    rt.relays[key] = relay
    rt.state.relay_workers.extend([pid, process_start(pid)] for pid in relay.pids)


def _stop_relay(rt: Runtime, li: int) -> None:
    for key in [k for k in rt.relays if k[0] == li]:
        rt.relays.pop(key).stop()


def _tap(rt: Runtime, ns: NetNamespace, name: str) -> SyncDevice:
    """A TAP device with offload, unconfigured: it stands in for a veth end."""
    return DeviceBuilder().layer(Layer.L2).offload(True).name(name).netns(ns).build_sync()


def _tap_pair(rt: Runtime, li: int, ends: list[Iface]) -> None:
    for end in ends:
        if end.node in rt.guests:
            rt.devices[(end.node, end.name)] = _guest_relay_end(rt, li, end)
        else:
            rt.devices[(end.node, end.name)] = _tap(rt, rt.netns(end.node), end.name)


# ---- links that end at a VM ---------------------------------------------------------------------
def _guest_nic(rt: Runtime, end: Iface) -> Any:
    from tunlab.topologies.drivers.vm import VmHandle

    handle = rt.nodes[end.node]
    assert isinstance(handle, VmHandle)
    return handle.nic(end.name, end.settings.mac)


def _guest_taps(rt: Runtime, ns: NetNamespace, name: str, end: Iface) -> list[SyncDevice]:
    """The TAP device qemu will take for a VM's NIC (one fd per queue), made in ns as `name`;
    the NIC's offload setting decides the virtio-net header (default on)."""
    queues = end.settings.queues or 1
    offload = end.settings.offload if isinstance(end.settings.offload, bool) else True
    builder = DeviceBuilder().layer(Layer.L2).offload(offload).name(name).netns(ns)
    if queues > 1:
        builder.multi_queue(True)
    first = builder.build_sync()
    devices = [first]
    try:
        devices += [first.try_clone() for _ in range(queues - 1)]
    except BaseException:
        for d in devices:
            d.close()
        raise
    _guest_nic(rt, end).devices.extend(devices)
    return devices


def _guest_veth(rt: Runtime, li: int, ends: list[Iface]) -> None:
    """A veth to a VM is one TAP: the peer's interface, its fd the guest's NIC. Between two VMs:
    a TAP for each on a bridge in the first VM's host-side namespace."""
    guests = [e for e in ends if e.node in rt.guests]
    hosts = [e for e in ends if e.node not in rt.guests]
    if hosts:
        _guest_taps(rt, rt.netns(hosts[0].node), hosts[0].name, guests[0])
        return
    ns = rt.netns(ends[0].node)
    ipr = rt.ipr(ns)
    br = f"tlb{li}"
    ipr.link("add", ifname=br, kind="bridge")
    for i, end in enumerate(ends):
        name = f"tlv{li}e{i}"
        _guest_taps(rt, ns, name, end)
        ipr.link("set", index=rt.index(ns, name), master=rt.index(ns, br), state="up")
    ipr.link("set", index=rt.index(ns, br), state="up")


def _guest_relay_end(rt: Runtime, li: int, end: Iface) -> SyncDevice:
    """Where a relay meets a VM: the guest's TAP and the relay's TAP on a small bridge in the
    VM's host-side namespace; returns the relay's device."""
    ns = rt.netns(end.node)
    ipr = rt.ipr(ns)
    ei = end.endpoint_index or 0
    br, guest_side, relay_side = f"tlr{li}e{ei}", f"tlq{li}e{ei}", f"tlw{li}e{ei}"
    ipr.link("add", ifname=br, kind="bridge")
    _guest_taps(rt, ns, guest_side, end)
    dev = _tap(rt, ns, relay_side)
    for name in (guest_side, relay_side):
        ipr.link("set", index=rt.index(ns, name), master=rt.index(ns, br), state="up")
    ipr.link("set", index=rt.index(ns, br), state="up")
    return dev


def _bridge_guest_port(rt: Runtime, br: str, end: Iface) -> None:
    sw = rt.bridges[br]
    port = _port_name(end)
    _guest_taps(rt, sw, port, end)
    ipr = rt.ipr(sw)
    kwargs: dict[str, Any] = {"master": rt.index(sw, br), "state": "up"}
    if end.settings.mtu is not None:
        kwargs["mtu"] = end.settings.mtu
    ipr.link("set", index=rt.index(sw, port), **kwargs)


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


def _port_name(end: Iface) -> str:
    return f"p{end.endpoint_index}-{end.node}"[:15]


def _bridge_tap_port(rt: Runtime, li: int, br: str, end: Iface) -> None:
    """A bridge port as a TAP pair: one end in the node, one on the bridge, a relay between
    (a_to_b: node -> bridge)."""
    sw = rt.bridges[br]
    if end.node in rt.guests:
        node_side = _guest_relay_end(rt, li, end)
    else:
        node_side = _tap(rt, rt.netns(end.node), end.name)
    rt.devices[(end.node, end.name)] = node_side
    port = _port_name(end)
    bridge_side = _tap(rt, sw, port)
    rt.devices[(f"bridge:{br}", port)] = bridge_side
    ipr = rt.ipr(sw)
    kwargs: dict[str, Any] = {"master": rt.index(sw, br), "state": "up"}
    if end.settings.mtu is not None:
        kwargs["mtu"] = end.settings.mtu
    ipr.link("set", index=rt.index(sw, port), **kwargs)
    link = rt.topo.links[li]
    assert end.endpoint_index is not None
    _start(rt, (li, end.endpoint_index), node_side, bridge_side, link.workers, rt.impairs.get(li),
           f"bridge-{li}-{end.endpoint_index}")  # fmt: skip


def _close_port(rt: Runtime, li: int, br: str, end: Iface) -> None:
    relay = rt.relays.pop((li, end.endpoint_index if end.endpoint_index is not None else -1), None)
    if relay is not None:
        relay.stop()
    for key in ((end.node, end.name), (f"bridge:{br}", _port_name(end))):
        dev = rt.devices.pop(key, None)
        if dev is not None:
            dev.close()


def vxlan_shim_names(li: int, ei: int) -> tuple[str, str, str]:
    """(vxlan device, bridge, relay-side TAP) a relayed vxlan end is made of, in its node."""
    return f"tlx{li}v{ei}", f"tlx{li}b{ei}", f"tlx{li}r{ei}"


def _vxlan_relayed(rt: Runtime, li: int, link: Link, ends: list[Iface]) -> None:
    """Each end: the vxlan device (hidden name) and a TAP on a bridge in the node, a relay to
    the TAP the node sees under the link's name. a_to_b leaves end 0, b_to_a leaves end 1."""
    hidden = [
        Iface(
            e.node, vxlan_shim_names(li, i)[0], e.loc, e.settings, e.link_index, e.endpoint_index, e.link_type
        )
        for i, e in enumerate(ends)
    ]
    _vxlan(rt, link, hidden)
    imp = rt.impairs.get(li)
    for i, end in enumerate(ends):
        ns = rt.netns(end.node)
        vx, br, side = vxlan_shim_names(li, i)
        ipr = rt.ipr(ns)
        ipr.link("add", ifname=br, kind="bridge")
        relay_side = _tap(rt, ns, side)
        rt.devices[(end.node, side)] = relay_side
        node_side = _tap(rt, ns, end.name)
        rt.devices[(end.node, end.name)] = node_side
        vx_index = rt.index(ns, vx)
        mtu = ipr.get_links(vx_index)[0].get_attr("IFLA_MTU")
        for dev in (vx, side):
            ipr.link("set", index=rt.index(ns, dev), master=rt.index(ns, br), state="up", mtu=mtu)
        ipr.link("set", index=rt.index(ns, br), state="up")
        if end.settings.mtu is None:
            ipr.link("set", index=rt.index(ns, end.name), mtu=mtu)
        out = (imp.a_to_b if i == 0 else imp.b_to_a).params() if imp is not None else None
        chosen = {"a->b": out} if out is not None else None
        _start(rt, (li, i), node_side, relay_side, link.workers, chosen, f"vxlan-{li}-{i}")


def _close_vxlan_relays(rt: Runtime, li: int, ends: list[Iface]) -> None:
    for i, end in enumerate(ends):
        relay = rt.relays.pop((li, i), None)
        if relay is not None:
            relay.stop()
        for key in ((end.node, end.name), (end.node, vxlan_shim_names(li, i)[2])):
            dev = rt.devices.pop(key, None)
            if dev is not None:
                dev.close()


def kernel_targets(rt: Runtime, li: int) -> list[tuple[NetNamespace, str, str]]:
    """(namespace, interface, direction key) whose egress carries each direction of a link."""
    link = rt.topo.links[li]
    ends = [rt.catalog.ifaces[(e.node, e.interface)] for e in link.endpoints]
    if link.type == "bridge":
        br = link.name or f"br{li}"
        out = []
        for end in ends:
            out.append((rt.netns(end.node), end.name, "a_to_b"))
            out.append((rt.bridges[br], _port_name(end), "b_to_a"))
        return out
    return [
        (rt.netns(ends[0].node), ends[0].name, "a_to_b"),
        (rt.netns(ends[1].node), ends[1].name, "b_to_a"),
    ]


def _impair_kernel(rt: Runtime, li: int, link: Link, ends: list[Iface], imp: LinkImpairment | None) -> None:
    """netem/tbf on the egress of each direction; GSO/TSO off there, so loss and delay apply
    per wire packet rather than per 64 KB super-packet (as netem sees them otherwise)."""
    for ns, ifname, key in kernel_targets(rt, li):
        n = getattr(imp, key) if imp is not None else None
        ipr = rt.ipr(ns)
        if n is not None and n.active and impairments.netem_features(n):
            with contextlib.suppress(OSError, LabError):
                ethtool.set_features(ns, ifname, {"gso": False, "tso": False})
        impairments.apply_kernel(ipr, rt.index(ns, ifname), n)


def _exec(rt: Runtime, name: str, argv: list[str]) -> None:
    try:
        result = rt.nodes[name].run(argv, timeout=120)
    except FileNotFoundError:
        raise LabError(f"exec on '{name}': command {argv[0]!r} not found") from None
    if result.code != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"exec on '{name}': {' '.join(argv)} exited {result.code}: {' | '.join(tail)}")
