"""Pieces link types build with: TAP and TUN devices standing in for interfaces, the TAPs a
VM's NIC takes, and relays between two devices (recorded for gc)."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

from tunlab._linux import ethtool
from tunlab.devices._builder import DeviceBuilder
from tunlab.devices._layer import Layer
from tunlab.devices._sync import SyncDevice
from tunlab.errors import LabError
from tunlab.relay._direction import Direction
from tunlab.relay._relay import Relay
from tunlab.relay.impair._params import NetemParams
from tunlab.topologies import _impairments as impairments
from tunlab.topologies._catalog import Iface
from tunlab.topologies._links import type_of
from tunlab.topologies._runtime import Phase, PlannedStep, Step
from tunlab.topologies._state import process_start

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace
    from tunlab.topologies._runtime import Runtime


def tap(ns: NetNamespace, name: str) -> SyncDevice:
    """A TAP device with offload, unconfigured: it stands in for a veth end."""
    return DeviceBuilder().layer(Layer.L2).offload(True).name(name).netns(ns).build_sync()


def build_device(rt: Runtime, iface: Iface, builder: DeviceBuilder) -> None:
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


def close_devices(rt: Runtime, keys: list[tuple[str, str]]) -> None:
    """Undo: close the lab's devices at these (node, interface) keys."""
    for key in keys:
        dev = rt.devices.pop(key, None)
        if dev is not None:
            dev.close()


def keys(ends: list[Iface]) -> list[tuple[str, str]]:
    return [(e.node, e.name) for e in ends]


def start_relay(
    rt: Runtime,
    key: tuple[int, int],
    a: SyncDevice,
    b: SyncDevice,
    impair: dict[Direction, NetemParams] | None,
    name: str,
) -> None:
    """An impairable relay between two devices (impaired from the start if impair is set)."""
    workers = rt.link(key[0]).workers
    relay = Relay(a, b, workers=workers, name=name, impair=impair, impairable=True).start()
    rt.relays[key] = relay
    rt.state.relay_workers.extend([pid, process_start(pid)] for pid in relay.pids)


def impair_of(rt: Runtime, key: tuple[int, int]) -> dict[Direction, NetemParams] | None:
    """What the relay at key starts with: the link's impairment as its type maps it."""
    imp = rt.impairs.get(key[0])
    if imp is None:
        return None
    return type_of(rt, key[0]).relay_impairment(key, imp)


def stop_relays(rt: Runtime, li: int, ends: list[int] | None = None) -> None:
    """Undo: stop a link's relays (those of the given ends only, when ends is given)."""
    for key in [k for k in rt.relays if k[0] == li and (ends is None or k[1] in ends)]:
        rt.relays.pop(key).stop()


# ---- links that end at a VM ---------------------------------------------------------------------
def guest_nic(rt: Runtime, end: Iface) -> Any:
    from tunlab.topologies._drivers.vm import VmHandle

    handle = rt.nodes[end.node]
    assert isinstance(handle, VmHandle)
    return handle.nic(end.name, end.settings.mac)


def guest_taps(rt: Runtime, ns: NetNamespace, name: str, end: Iface) -> list[SyncDevice]:
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
    guest_nic(rt, end).devices.extend(devices)
    return devices


def guest_relay_names(li: int, ei: int) -> tuple[str, str, str]:
    """(bridge, guest-side TAP, relay-side TAP) where a relay meets a VM's NIC."""
    return f"tlr{li}e{ei}", f"tlq{li}e{ei}", f"tlw{li}e{ei}"


def guest_relay_end(rt: Runtime, li: int, end: Iface) -> SyncDevice:
    """Where a relay meets a VM: the guest's TAP and the relay's TAP on a small bridge in the
    VM's host-side namespace; returns the relay's device."""
    ns = rt.netns(end.node)
    ipr = rt.ipr(ns)
    br, guest_side, relay_side = guest_relay_names(li, end.endpoint_index or 0)
    ipr.link("add", ifname=br, kind="bridge")
    guest_taps(rt, ns, guest_side, end)
    dev = tap(ns, relay_side)
    for name in (guest_side, relay_side):
        ipr.link("set", index=rt.index(ns, name), master=rt.index(ns, br), state="up")
    ipr.link("set", index=rt.index(ns, br), state="up")
    return dev


def relay_end(rt: Runtime, li: int, end: Iface) -> SyncDevice:
    """The device a relay uses for a link end: a TAP in the node, or the relay side at a VM."""
    if rt.in_guest(end):
        return guest_relay_end(rt, li, end)
    return tap(rt.netns(end.node), end.name)


def relay_ends(rt: Runtime, li: int, ends: list[Iface]) -> None:
    """A TAP pair for a relayed link: each end's relay device, held by the lab."""
    for end in ends:
        rt.devices[(end.node, end.name)] = relay_end(rt, li, end)


# ---- steps several link types share --------------------------------------------------------------
def relay_step(rt: Runtime, li: int) -> PlannedStep:
    """Start the relay between a link's two devices (once both exist)."""

    def start() -> None:
        ends = rt.ends(li)
        a, b = (rt.devices[(e.node, e.name)] for e in ends)
        start_relay(rt, (li, -1), a, b, impair_of(rt, (li, -1)), f"{rt.link(li).type}-{li}")

    return Phase.RELAYS, Step(f"relay {rt.label(li)}", start, functools.partial(stop_relays, rt, li))


def kernel_impair_step(rt: Runtime, li: int) -> PlannedStep:
    """netem/tbf on the egress of each direction; GSO/TSO off there, so loss and delay apply
    per wire packet rather than per 64 KB super-packet (as netem sees them otherwise)."""

    def apply() -> None:
        imp = rt.impairs.get(li)
        for ns, ifname, key in type_of(rt, li).kernel_targets(rt, li):
            n = getattr(imp, key) if imp is not None else None
            if n is not None and n.active and impairments.netem_features(n):
                with contextlib.suppress(OSError, LabError):
                    ethtool.set_features(ns, ifname, {"gso": False, "tso": False})
            impairments.apply_kernel(rt.ipr(ns), rt.index(ns, ifname), n)

    return Phase.IMPAIR, Step(f"impair {rt.label(li)} (kernel qdiscs)", apply)


def kernel_impair_steps(rt: Runtime, li: int) -> list[PlannedStep]:
    """The kernel-qdisc step of a link impaired there (none otherwise)."""
    return [kernel_impair_step(rt, li)] if rt.placements[li].via == "kernel" else []
