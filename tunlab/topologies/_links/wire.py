"""type: wire — one node's interface whose frames cross to a peer in UDP datagrams.

It is what a link between two hosts of a cluster becomes on each host (docs/cluster.md): a
TUN (or TAP) device in the node and a relay between it and a UDP socket of the host, bound
to the host's underlay address and connected to the peer host's. Super-packets cross whole
(the device's GSO size is set so each fits a datagram). The relay carries the impairment:
a_to_b is what leaves the node for the peer, b_to_a what arrives from it. Written by hand,
a wire meets any peer that speaks the same framing (another tunlab wire).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import secrets
import socket
import threading
from typing import Any, Literal

from pydantic import Field, field_validator

from tunlab._linux.netns import NetNamespace
from tunlab.devices._backend import ETHERNET_HEADER
from tunlab.devices._builder import DeviceBuilder
from tunlab.devices._datagram import MAX_DATAGRAM, DatagramDevice
from tunlab.devices._layer import Layer
from tunlab.devices._sync import SyncDevice
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN
from tunlab.errors import LabError
from tunlab.topologies._catalog import Iface, Issue
from tunlab.topologies._fields import Switch
from tunlab.topologies._impairments import Placement, place
from tunlab.topologies._links import vxlan, wiring
from tunlab.topologies._links.base import A_TO_B, CheckContext, KernelTarget, LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step

VXLAN_PORT = 4789  # IANA's; a wire over vxlan with port: 0 uses it
SOCKET_BUFFER = 8 << 20  # a burst of 64 KB super-packets waits here instead of being dropped
_reserved: dict[tuple[str, int], socket.socket] = {}
_reserved_lock = threading.Lock()


class WireLink(LinkModel):
    """One end here, its peer across UDP: the link a cluster makes between two hosts."""

    type: Literal["wire"]
    layer: Literal["tun", "tap"] = Field("tun", description="tun: IP packets; tap: Ethernet frames")
    offload: Switch = Field(True, description="the virtio-net header: super-packets cross whole")
    local: str = Field(description="this host's underlay address the UDP socket is bound to")
    port: int = Field(0, ge=0, le=65535, description="the local UDP port (0: any free one)")
    peer: str = Field(description="the peer host's underlay address")
    peer_port: int = Field(1, ge=1, le=65535, description="the peer's UDP port (udp)")
    vni: int | None = Field(
        None, ge=1, le=16777215, description="transport: vxlan: the network identifier (both ends alike)"
    )

    @field_validator("local", "peer")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        return value


# ---- what a cluster makes of a link between two hosts ---------------------------------------------
def crossing_issue(link: LinkModel, kind: str, carried: dict[str, Any]) -> tuple[str, str] | None:
    """(field, problem) when a link of type kind cannot cross between hosts as asked."""
    if link.transport == "udp" and link.impair_via == "kernel":
        return "impair_via", (
            "a link between two hosts over udp is impaired in its relay: use impair_via: relay "
            "(or transport: vxlan)"
        )
    if link.transport == "vxlan" and carried.get("layer") != "tap":
        return "transport", f"vxlan carries Ethernet frames: a {kind} link crosses hosts over udp only"
    return None


def wire_for(
    link: LinkModel,
    raw: dict[str, Any],
    end: dict[str, Any],
    side: int,
    carried: dict[str, Any],
    local: str,
    peer: str,
) -> dict[str, Any]:
    """The wire (as topology data) that carries end `side` of link from local to peer: its
    name and MTU, and the direction that leaves from this side as its a_to_b. Its ports (udp)
    or vni (vxlan) are placeholders the cluster fills in once it has them."""
    out: dict[str, Any] = {
        "type": "wire",
        "endpoints": [end],
        **carried,
        "local": local,
        "port": 0,
        "peer": peer,
        "peer_port": 1,
        "workers": link.workers,
    }
    if link.transport == "vxlan":
        out.update(transport="vxlan", vni=1, port=VXLAN_PORT, impair_via=link.impair_via)
    for key in ("name", "mtu"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    imp = link.impairment
    if imp is not None:
        leaving = imp.a_to_b if side == 0 else imp.b_to_a
        if leaving.active:
            out["impair"] = {"a_to_b": leaving.model_dump(mode="json", exclude_defaults=True)}
    return out


def needs_vni(wire: dict[str, Any]) -> bool:
    """The wire (as data) rides kernel vxlan: the cluster gives it a vni."""
    return wire.get("transport") == "vxlan"


def reserve(local: str) -> int:
    """Bind a UDP socket on local with a port the kernel picks and keep it for the wire that
    names (local, that port): how a cluster learns both ports before either end is made."""
    sock = _udp_socket(local)
    sock.bind((local, 0))
    port = int(sock.getsockname()[1])
    with _reserved_lock:
        _reserved[(local, port)] = sock
    return port


def release(local: str, port: int) -> None:
    """Close a reserved socket no wire took (a bring-up that failed before its wires)."""
    with _reserved_lock:
        sock = _reserved.pop((local, port), None)
    if sock is not None:
        sock.close()


def _udp_socket(local: str) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(local).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    for option, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_*BUFFORCE as root
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    return sock


def open_wire(link: WireLink, like: SyncDevice) -> SyncDevice:
    """The UDP end of a wire: its reserved socket (or a new one), connected to the peer, with
    the frame format of the node's device."""
    with _reserved_lock:
        sock = _reserved.pop((link.local, link.port), None)
    try:
        if sock is None:
            sock = _udp_socket(link.local)
            sock.bind((link.local, link.port))
        sock.connect((link.peer, link.peer_port))
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise LabError(
            f"wire {link.local}:{link.port} -> {link.peer}:{link.peer_port}: {exc.strerror or exc} "
            "(is the local address one of this host's?)"
        ) from None
    backend = like.backend
    return SyncDevice(DatagramDevice(sock, backend.layer, backend.frame_format))


def gso_limit(link: WireLink) -> int:
    """The node device's GSO size: the largest super-packet whose frame fits one datagram."""
    family = socket.AF_INET6 if ipaddress.ip_address(link.local).version == 6 else socket.AF_INET
    framing = (VIRTIO_NET_HDR_LEN if link.offload else 0) + (ETHERNET_HEADER if link.layer == "tap" else 0)
    return MAX_DATAGRAM[family] - framing


class Wire(LinkType):
    name = "wire"
    model = WireLink
    rank = 70
    endpoints = (1, 1)
    l2 = False
    own_relay = True
    ethtool_offload = False
    graph_style = "dashed"
    mermaid_arrow = "-.-"

    def check(self, ctx: CheckContext, li: int, link: LinkModel) -> list[Issue]:
        assert isinstance(link, WireLink)
        loc = ("links", li)
        if link.transport == "vxlan":
            issues = []
            if link.vni is None:
                issues.append(Issue((*loc, "vni"), "transport: vxlan needs a vni (1-16777215)"))
            if link.layer != "tap":
                issues.append(
                    Issue((*loc, "layer"), "transport: vxlan carries Ethernet frames: use layer: tap")
                )
            return issues
        if link.impair is not None and link.impair_via == "kernel":
            return [
                Issue(
                    (*loc, "impair_via"),
                    "a wire over udp is impaired in its relay: use impair_via: relay (or transport: vxlan)",
                )
            ]
        return []

    def check_end(self, ctx: CheckContext, li: int, ei: int, iface: Iface) -> list[Issue]:
        link = ctx.topo.links[li]
        if ctx.in_guest.get(iface.node) and isinstance(link, WireLink) and link.layer == "tun":
            return [
                Issue(
                    ("links", li, "layer"),
                    "a VM's NIC is Ethernet: a wire to a VM needs layer: tap",
                )
            ]
        if iface.settings.offload is not None:
            return [
                Issue(
                    ("links", li, "endpoints", ei, "offload"), "set offload on the wire link, not on its end"
                )
            ]
        return []

    def end_is_l2(self, rt: Runtime, end: Iface) -> bool:
        link = rt.link(end.link_index) if end.link_index is not None else None
        return isinstance(link, WireLink) and link.layer == "tap"

    def configured_by_netlink(self, rt: Runtime, end: Iface) -> bool:
        link = rt.link(end.link_index) if end.link_index is not None else None
        if isinstance(link, WireLink) and link.transport == "vxlan":
            return not rt.in_guest(end)  # the vxlan device (or the relay's TAP), moved in bare
        return False  # built configured (a VM configures its NIC itself)

    def placement(self, link: LinkModel, qdiscs: frozenset[str]) -> Placement:
        if isinstance(link, WireLink) and link.transport == "vxlan":
            return place(link, qdiscs)  # kernel qdiscs, or a relay inserted in the node
        return Placement("relay", "")

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        (end,) = rt.ends(li)
        link = rt.link(li)
        assert isinstance(link, WireLink)
        if link.transport == "vxlan":
            relayed = rt.placements[li].relayed
            vx = Step(
                f"wire {rt.label(li)} (vxlan {link.vni} {link.local} -> {link.peer}"
                f"{', a relay for the impairment' if relayed else ''})",
                functools.partial(_vxlan_end, rt, li, end, link, relayed),
                functools.partial(vxlan.close_relayed, rt, li, [end]) if relayed else None,
            )
            return [(Phase.LINKS, vx), *wiring.kernel_impair_steps(rt, li)]
        make = Step(
            f"wire {rt.label(li)} ({link.local}:{link.port or 'any'} -> {link.peer}:{link.peer_port})",
            functools.partial(_node_end, rt, li, end, link),
            functools.partial(wiring.close_devices, rt, wiring.keys([end])),
        )

        def start() -> None:
            dev = rt.devices[(end.node, end.name)]
            udp = open_wire(link, dev)
            try:
                wiring.start_relay(rt, (li, -1), dev, udp, wiring.impair_of(rt, (li, -1)), f"wire-{li}")
            except BaseException:
                udp.close()
                raise

        relay = Step(
            f"relay {rt.label(li)} <-> {link.peer}", start, functools.partial(wiring.stop_relays, rt, li)
        )
        return [(Phase.LINKS, make), (Phase.RELAYS, relay)]

    def kernel_targets(self, rt: Runtime, li: int) -> list[KernelTarget]:
        (end,) = rt.ends(li)
        return [(rt.netns(end.node), end.name, A_TO_B)]  # what leaves the node (b_to_a: the peer's)

    def edge_label(self, link: LinkModel) -> str:
        peer = f" to {link.peer}" if isinstance(link, WireLink) else ""
        return f"{self.name}{peer}"

    def mermaid(self, li: int, link: LinkModel, label: object) -> list[str]:
        a = link.endpoints[0]
        peer = link.peer if isinstance(link, WireLink) else "peer"
        return [f'  {a.node} {self.mermaid_arrow}|"{a.interface} · wire"| wire{li}(("{peer}"))']

    def dot(self, li: int, link: LinkModel, quote: object, label_attr: str) -> list[str]:
        a = link.endpoints[0]
        q = quote if callable(quote) else repr
        peer = link.peer if isinstance(link, WireLink) else "peer"
        return [
            f"  {q(f'wire{li}')} [shape=plaintext, label={q(peer)}];",
            f"  {q(a.node)} -- {q(f'wire{li}')} "
            f"[style={self.graph_style}, {label_attr}={q(self.edge_label(link))}];",
        ]


def _node_end(rt: Runtime, li: int, end: Iface, link: WireLink) -> None:
    """The node's device: TUN or TAP, configured, its GSO size within a datagram."""
    if rt.in_guest(end):
        rt.devices[(end.node, end.name)] = wiring.guest_relay_end(rt, li, end)
        return
    layer = Layer.L2 if link.layer == "tap" else Layer.L3
    wiring.build_device(rt, end, DeviceBuilder().layer(layer).offload(bool(link.offload)))
    if link.offload:
        ns = rt.netns(end.node)
        with contextlib.suppress(OSError):  # an older kernel: the wire splits what is too large
            rt.ipr(ns).link("set", index=rt.index(ns, end.name), gso_max_size=gso_limit(link))


def _vxlan_end(rt: Runtime, li: int, end: Iface, link: WireLink, relayed: bool) -> None:
    """The node's end over kernel vxlan: the device is made in this host's namespace, where its
    UDP socket stays on the underlay, and moved into the node (under its hidden name when a
    relay carries the impairment)."""
    host = NetNamespace.current()
    ipr = rt.ipr(host)
    six = "6" if ipaddress.ip_address(link.peer).version == 6 else ""
    temp = f"tlw{secrets.token_hex(5)}"
    kwargs: dict[str, object] = {f"vxlan_group{six}": link.peer, f"vxlan_local{six}": link.local}
    under = [a["index"] for a in ipr.get_addr() if a.get_attr("IFA_ADDRESS") == link.local]
    if under:  # the device the tunnel leaves by: the kernel takes its MTU less vxlan's headers
        kwargs["vxlan_link"] = under[0]
    ipr.link(
        "add", ifname=temp, kind="vxlan", vxlan_id=link.vni, vxlan_port=link.port or VXLAN_PORT, **kwargs
    )
    name = vxlan.shim_names(li, 0)[0] if relayed else end.name
    try:
        ipr.link("set", index=rt.index(host, temp), net_ns_fd=rt.netns(end.node).path, ifname=name)
    except BaseException:
        with contextlib.suppress(Exception):
            ipr.link("del", index=rt.index(host, temp))
        raise
    if relayed:
        vxlan.relay_shim(rt, li, 0, end)
