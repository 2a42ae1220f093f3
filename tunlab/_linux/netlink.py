"""One rtnetlink session per namespace: batched requests (every ACK checked) and dumps.

pyroute2 encodes and decodes the messages (ifinfmsg, ifaddrmsg, rtmsg); this module owns the
socket: one raw NETLINK_ROUTE socket created inside the namespace once, then used from any
thread (and inside a running asyncio loop, which pyroute2's own IPRoute refuses). Requests are
queued and sent in one write per batch, so a 100-node lab or a device's whole configuration
costs one round trip per namespace. The kernel handles a batch's messages in order.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from tunlab._linux.netns import NetNamespace
from tunlab.errors import LabError

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
_HDR = struct.Struct("=IHHII")
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_CHANGE = NLM_F_REQUEST | NLM_F_ACK
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Failure:
    """A request the kernel refused: its label (what it was for) and the errno."""

    label: str
    code: int

    def __str__(self) -> str:
        return f"{self.label}: {os.strerror(self.code)}"


class NetlinkSession:
    """Queue rtnetlink requests for one namespace and send them together; dump links/addresses."""

    def __init__(self, ns: NetNamespace | None = None, *, sock: socket.socket | None = None) -> None:
        if sock is None:
            if ns is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            else:
                sock = ns.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        self.ns = ns
        self.sock = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        self._seq = 1
        self._pending: list[tuple[int, bytes, str]] = []
        self._lock = threading.Lock()  # one exchange at a time when threads share a session

    @classmethod
    def here(cls) -> NetlinkSession:
        """A session in the calling thread's namespace (for code already running inside it)."""
        return cls()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1 if seq < 0x7FFFFFFF else 1
        return seq

    def _encode(self, msg: Any, msg_type: int, flags: int) -> tuple[int, bytes]:
        seq = self._next_seq()
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        return seq, bytes(msg.data)

    def _queue(self, msg: Any, msg_type: int, flags: int, label: str) -> None:
        seq, data = self._encode(msg, msg_type, flags)
        self._pending.append((seq, data, label))

    @property
    def pending(self) -> int:
        """Requests queued and not yet sent."""
        return len(self._pending)

    # ---- requests ---------------------------------------------------------------------------
    def add_veth(self, name: str, peer: str, peer_ns: NetNamespace, label: str) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_ns.fd)]
        data = {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}
        info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", data)]}
        m["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", info)]
        self._queue(m, RTM_NEWLINK, _CREATE, label)

    def set_link(
        self,
        index: int,
        label: str,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        master: int | None = None,
        txqlen: int | None = None,
        name: str | None = None,
    ) -> None:
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        m["index"] = index
        if up is not None:
            m["flags"] = IFF_UP if up else 0
            m["change"] = IFF_UP
        attrs: list[tuple[str, Any]] = []
        if name is not None:
            attrs.append(("IFLA_IFNAME", name))
        if mtu is not None:
            attrs.append(("IFLA_MTU", mtu))
        if txqlen is not None:
            attrs.append(("IFLA_TXQLEN", txqlen))
        if mac is not None:
            attrs.append(("IFLA_ADDRESS", mac))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        m["attrs"] = attrs
        self._queue(m, RTM_NEWLINK, _CHANGE, label)

    def add_address(
        self,
        index: int,
        address: IPInterface,
        label: str,
        *,
        broadcast: bool | ipaddress.IPv4Address = False,
        peer: ipaddress.IPv4Address | None = None,
    ) -> None:
        """Add an address; IPv6 without duplicate address detection; broadcast: True computes it."""
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        m = ifaddrmsg()
        m["family"] = socket.AF_INET if address.version == 4 else socket.AF_INET6
        m["prefixlen"] = address.network.prefixlen
        m["index"] = index
        ip = str(address.ip)
        if address.version == 4:
            attrs: list[tuple[str, Any]] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", str(peer or ip))]
            if isinstance(broadcast, ipaddress.IPv4Address):
                attrs.append(("IFA_BROADCAST", str(broadcast)))
            elif broadcast and peer is None and address.network.prefixlen < 31:
                attrs.append(("IFA_BROADCAST", str(address.network.broadcast_address)))
        else:
            m["flags"] = IFA_F_NODAD  # usable at once: no duplicate address detection wait
            attrs = [("IFA_ADDRESS", ip)]
        m["attrs"] = attrs
        self._queue(m, RTM_NEWADDR, _CREATE, label)

    def delete_address(self, index: int, address: Address, label: str) -> None:
        """Remove an address as a dump reported it (local, peer and prefix length)."""
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        m = ifaddrmsg()
        m["family"] = socket.AF_INET if address.interface.version == 4 else socket.AF_INET6
        m["prefixlen"] = address.interface.network.prefixlen
        m["index"] = index
        attrs: list[tuple[str, Any]] = []
        if address.interface.version == 4:
            attrs.append(("IFA_LOCAL", str(address.interface.ip)))
            attrs.append(("IFA_ADDRESS", str(address.peer or address.interface.ip)))
        else:
            attrs.append(("IFA_ADDRESS", str(address.interface.ip)))
        m["attrs"] = attrs
        self._queue(m, RTM_DELADDR, _CHANGE, label)

    def add_route(
        self,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        label: str,
        *,
        via: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
        oif: int | None = None,
        metric: int | None = None,
    ) -> None:
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        m = rtmsg()
        m["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        m["dst_len"] = dst.prefixlen
        m["table"] = RT_TABLE_MAIN
        m["proto"] = RTPROT_STATIC
        m["type"] = RTN_UNICAST
        m["scope"] = RT_SCOPE_UNIVERSE if via is not None else RT_SCOPE_LINK
        attrs: list[tuple[str, Any]] = [("RTA_TABLE", RT_TABLE_MAIN)]
        if dst.prefixlen:
            attrs.append(("RTA_DST", str(dst.network_address)))
        if via is not None:
            attrs.append(("RTA_GATEWAY", str(via)))
        if oif is not None:
            attrs.append(("RTA_OIF", oif))
        if metric is not None:
            attrs.append(("RTA_PRIORITY", metric))
        m["attrs"] = attrs
        self._queue(m, RTM_NEWROUTE, _CREATE, label)

    # ---- sending ----------------------------------------------------------------------------
    def send(self) -> list[Failure]:
        """Send everything queued and wait for every ACK; the refused requests, in order."""
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return []
            labels = {seq: label for seq, _, label in pending}
            chunk: list[bytes] = []
            size = 0
            for _, data, _ in pending:  # stay well below the socket buffer per write
                if size + len(data) > 256 * 1024 and chunk:
                    self.sock.sendall(b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
            if chunk:
                self.sock.sendall(b"".join(chunk))
            failures: list[tuple[int, int]] = []
            waiting = set(labels)
            while waiting:
                data = self.sock.recv(1 << 16)
                for msg_type, seq, off, _length in _headers(data):
                    if msg_type == NLMSG_ERROR and seq in waiting:
                        code = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        waiting.discard(seq)
                        if code:
                            failures.append((seq, code))
            return [Failure(labels[seq], code) for seq, code in sorted(failures)]

    def commit(self) -> None:
        """Send everything queued; raise LabError naming the first request the kernel refused."""
        failures = self.send()
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise LabError(f"{failures[0]}{more}")

    # ---- dumps ------------------------------------------------------------------------------
    def _dump(self, msg: Any, msg_type: int, flags: int) -> list[Any]:
        """One request whose answer is a list of messages (a dump, or a single get)."""
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        with self._lock:
            seq, data = self._encode(msg, msg_type, flags)
            self.sock.sendall(data)
            marshal = MarshalRtnl()
            out: list[Any] = []
            while True:
                data = self.sock.recv(1 << 20)
                done = False
                for mtype, mseq, off, length in _headers(data):
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_DONE:
                        done = True
                    elif mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        done = True
                    else:
                        cls = marshal.msg_map[mtype]
                        item = cls(data[off : off + length])
                        item.decode()
                        out.append(item)
                        if not flags & NLM_F_DUMP:
                            done = True
                if done:
                    return out

    def link(self, *, index: int | None = None, name: str | None = None) -> Any:
        """The RTM_NEWLINK message of one link, by index or by name (OSError ENODEV if none)."""
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        m = ifinfmsg()
        m["index"] = index or 0
        if name is not None:
            m["attrs"] = [("IFLA_IFNAME", name)]
        found = self._dump(m, RTM_GETLINK, NLM_F_REQUEST)
        return found[0]

    def index_of(self, name: str) -> int:
        return int(self.link(name=name)["index"])

    def addresses(self, index: int | None = None) -> list[Address]:
        """Every address (of one link, or of all), in the kernel's order."""
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        m = ifaddrmsg()
        out = []
        for msg in self._dump(m, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP):
            if index is not None and msg["index"] != index:
                continue
            local = msg.get_attr("IFA_LOCAL")
            remote = msg.get_attr("IFA_ADDRESS")
            ip = local or remote
            if ip is None:
                continue
            iface = ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")
            peer = None
            if iface.version == 4 and local and remote and remote != local:
                peer = ipaddress.IPv4Address(remote)
            brd = msg.get_attr("IFA_BROADCAST")
            out.append(
                Address(
                    int(msg["index"]),
                    iface,
                    peer,
                    ipaddress.IPv4Address(brd) if brd else None,
                )
            )
        return out


@dataclass(frozen=True)
class Address:
    """An address as the kernel reports it: the interface's address, its peer and broadcast."""

    index: int
    interface: IPInterface
    peer: ipaddress.IPv4Address | None = None
    broadcast: ipaddress.IPv4Address | None = None


def _headers(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, sequence number, offset, length) of each netlink message in a buffer."""
    out = []
    off = 0
    while off + _HDR.size <= len(data):
        length, msg_type, _flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        out.append((msg_type, seq, off, length))
        off += (length + 3) & ~3
    return out


def indexes(ns: NetNamespace, names: list[str]) -> dict[str, int]:
    """Interface indexes by name inside a namespace (one worker thread, one ioctl per name)."""

    def lookup() -> dict[str, int]:
        out = {}
        for name in names:
            try:
                out[name] = socket.if_nametoindex(name)
            except OSError:
                raise LabError(f"interface '{name}' does not exist in {ns.name or ns.path}") from None
        return out

    return ns.call(lookup)
