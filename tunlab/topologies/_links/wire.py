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
import socket
import threading
from typing import Literal

from pydantic import Field, field_validator

from tunlab.devices._builder import DeviceBuilder
from tunlab.devices._datagram import MAX_DATAGRAM, DatagramDevice
from tunlab.devices._layer import Layer
from tunlab.devices._sync import SyncDevice
from tunlab.errors import LabError
from tunlab.topologies._catalog import Iface, Issue
from tunlab.topologies._fields import Switch
from tunlab.topologies._links import wiring
from tunlab.topologies._links.base import CheckContext, KernelTarget, LinkModel, LinkType
from tunlab.topologies._runtime import Phase, PlannedStep, Runtime, Step

VNET_HDR = 10
ETHERNET = 14
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
    peer_port: int = Field(ge=1, le=65535, description="the peer's UDP port")

    @field_validator("local", "peer")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        return value


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
    framing = (VNET_HDR if link.offload else 0) + (ETHERNET if link.layer == "tap" else 0)
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
        if link.impair is not None and link.impair_via == "kernel":
            return [
                Issue(
                    ("links", li, "impair_via"), "a wire is impaired in its own relay: use impair_via: relay"
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
        return False  # built configured (a VM configures its NIC itself)

    def steps(self, rt: Runtime, li: int) -> list[PlannedStep]:
        (end,) = rt.ends(li)
        link = rt.link(li)
        assert isinstance(link, WireLink)
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
        return []

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
