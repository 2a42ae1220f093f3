"""Byte layouts shared by the BSD family: sockaddrs, ifreq/ifaliasreq/in6_aliasreq, PF_ROUTE
messages, BPF records. Pure functions of an Abi (no I/O), so tests check every byte."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator

from tunlab.devices._bsd.abi import (
    AF_INET,
    AF_LINK,
    IFNAMSIZ,
    ND6_INFINITE_LIFETIME,
    RTA_DST,
    RTA_GATEWAY,
    RTA_NETMASK,
    RTF_STATIC,
    RTF_UP,
    Abi,
)

SOCKADDR_IN = 16
SOCKADDR_IN6 = 28


def ifname(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ:
        raise ValueError(f"interface name {name!r}: 1..{IFNAMSIZ - 1} bytes")
    return raw.ljust(IFNAMSIZ, b"\0")


def sockaddr_in(addr: ipaddress.IPv4Address | None) -> bytes:
    """struct sockaddr_in with sin_len; None: all zero (AF_UNSPEC, 'no address')."""
    if addr is None:
        return bytes(SOCKADDR_IN)
    return struct.pack("BBH4s8x", SOCKADDR_IN, AF_INET, 0, addr.packed)


def sockaddr_in6(abi: Abi, addr: ipaddress.IPv6Address | None, scope: int = 0) -> bytes:
    if addr is None:
        return bytes(SOCKADDR_IN6)
    return struct.pack("BBHI16sI", SOCKADDR_IN6, abi.af_inet6, 0, 0, addr.packed, scope)


def sockaddr_dl(abi: Abi, index: int, mac: bytes = b"") -> bytes:
    """An AF_LINK address naming an interface (and, for a MAC, its 6 bytes)."""
    out = bytearray(abi.sockaddr_dl)
    struct.pack_into("BBHBBBB", out, 0, abi.sockaddr_dl, AF_LINK, index, 0, 0, len(mac), 0)
    out[8 : 8 + len(mac)] = mac
    return bytes(out)


def ifreq(abi: Abi, name: str, payload: bytes = b"") -> bytearray:
    """struct ifreq: the name, then the union (flags, MTU, an address...) at offset 16."""
    out = bytearray(abi.ifreq)
    out[:IFNAMSIZ] = ifname(name)
    if len(payload) > abi.ifreq - IFNAMSIZ:
        raise ValueError("ifreq payload too large")
    out[IFNAMSIZ : IFNAMSIZ + len(payload)] = payload
    return out


def ifreq_blank(abi: Abi) -> bytearray:
    """An all-zero ifreq for the kernel to fill in (TUNGIFNAME, TAPGIFNAME)."""
    return bytearray(abi.ifreq)


def ifreq_int(abi: Abi, name: str, value: int = 0) -> bytearray:
    return ifreq(abi, name, struct.pack("i", value))


def ifreq_short(abi: Abi, name: str, value: int = 0) -> bytearray:
    """An ifreq with ifr_flags (a short the kernel treats as 16 flag bits: IFF_MULTICAST is
    0x8000, so packed unsigned)."""
    return ifreq(abi, name, struct.pack("H", value & 0xFFFF))


def set_short(buf: bytearray, value: int) -> None:
    """Write ifr_flags into an ifreq the kernel filled, leaving every other byte as it was."""
    struct.pack_into("H", buf, IFNAMSIZ, value & 0xFFFF)


def read_int(buf: bytes | bytearray) -> int:
    return int(struct.unpack_from("i", buf, IFNAMSIZ)[0])


def read_short(buf: bytes | bytearray) -> int:
    return int(struct.unpack_from("H", buf, IFNAMSIZ)[0])


def read_name(buf: bytes | bytearray) -> str:
    return bytes(buf[:IFNAMSIZ]).split(b"\0", 1)[0].decode()


def lladdr_ifreq(abi: Abi, name: str, mac: bytes) -> bytearray:
    """SIOCSIFLLADDR's ifreq: ifr_addr with sa_len = 6 (the address length), AF_LINK, the MAC."""
    return ifreq(abi, name, struct.pack("BB6s", 6, AF_LINK, mac))


def ifaliasreq(
    abi: Abi,
    name: str,
    addr: ipaddress.IPv4Address,
    dest: ipaddress.IPv4Address | None,
    mask: ipaddress.IPv4Address,
) -> bytearray:
    """SIOCAIFADDR: address, broadcast-or-destination (the peer on a point-to-point link), mask."""
    out = bytearray(abi.ifaliasreq)
    out[:IFNAMSIZ] = ifname(name)
    out[16:32] = sockaddr_in(addr)
    out[32:48] = sockaddr_in(dest)
    out[48:64] = sockaddr_in(mask)
    return out


def in6_aliasreq(
    abi: Abi,
    name: str,
    addr: ipaddress.IPv6Address,
    prefixlen: int,
    dest: ipaddress.IPv6Address | None = None,
    flags: int = 0,
) -> bytearray:
    """SIOCAIFADDR_IN6 with infinite lifetimes (pltime <= vltime, both 0xffffffff)."""
    out = bytearray(abi.in6_aliasreq)
    out[:IFNAMSIZ] = ifname(name)
    out[16:44] = sockaddr_in6(abi, addr)
    out[44:72] = sockaddr_in6(abi, dest)
    out[72:100] = sockaddr_in6(abi, ipaddress.IPv6Network(f"::/{prefixlen}").netmask)
    struct.pack_into("i", out, abi.in6_aliasreq_flags_at, flags)
    struct.pack_into(
        "qqII", out, abi.in6_aliasreq_lifetime_at, 0, 0, ND6_INFINITE_LIFETIME, ND6_INFINITE_LIFETIME
    )
    return out


def in6_ifreq(abi: Abi, name: str, addr: ipaddress.IPv6Address) -> bytearray:
    """SIOCDIFADDR_IN6: the name and the address to remove."""
    out = bytearray(abi.in6_ifreq)
    out[:IFNAMSIZ] = ifname(name)
    out[16:44] = sockaddr_in6(abi, addr)
    return out


# ---- PF_ROUTE -------------------------------------------------------------------------------
def _padded(abi: Abi, sa: bytes) -> bytes:
    """A sockaddr rounded up to the OS's alignment (an empty one takes the minimum)."""
    if not sa:
        return bytes(abi.rt_sa_align)
    return sa + bytes(-len(sa) % abi.rt_sa_align)


def route_message(
    abi: Abi,
    kind: int,
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    if_index: int,
    seq: int,
    pid: int,
) -> bytes:
    """RTM_ADD/RTM_DELETE of a route to network through an interface (`route add -net X
    -interface tunN`): destination, a sockaddr_dl gateway naming the interface, netmask — in
    RTA bit order, each padded as the OS pads them."""
    if network.version == 4:
        dst = sockaddr_in(network.network_address)
        mask = sockaddr_in(network.netmask)
    else:
        dst = sockaddr_in6(abi, network.network_address)
        mask = sockaddr_in6(abi, network.netmask)
    body = b"".join(_padded(abi, sa) for sa in (dst, sockaddr_dl(abi, if_index), mask))
    head = bytearray(abi.rt_msghdr)
    total = len(head) + len(body)
    struct.pack_into("HBB", head, 0, total, abi.rtm_version, kind)
    if abi.os == "openbsd":
        struct.pack_into("H", head, 4, abi.rt_msghdr)  # rtm_hdrlen
    struct.pack_into("H", head, abi.rt_index_at, if_index)
    struct.pack_into("i", head, abi.rt_flags_at, RTF_UP | RTF_STATIC)
    struct.pack_into("i", head, abi.rt_addrs_at, RTA_DST | RTA_GATEWAY | RTA_NETMASK)
    struct.pack_into("i", head, abi.rt_pid_at, pid)
    struct.pack_into("i", head, abi.rt_seq_at, seq)
    return bytes(head) + body


# ---- BPF ------------------------------------------------------------------------------------
def bpf_records(abi: Abi, buf: bytes | bytearray | memoryview, n: int) -> Iterator[bytes]:
    """The frames in the first n bytes of a BPF read: each record says its own header length
    (bh_hdrlen) and capture length; records start BPF_WORDALIGN apart."""
    view = memoryview(buf)[:n]
    p = 0
    t = abi.bpf_timeval
    while p + t + 10 <= n:
        caplen, _datalen, hdrlen = struct.unpack_from("IIH", view, p + t)
        if hdrlen == 0:
            break
        yield bytes(view[p + hdrlen : p + hdrlen + caplen])
        step = hdrlen + caplen
        p += (step + abi.bpf_align - 1) & ~(abi.bpf_align - 1)


def bpf_record(abi: Abi, frame: bytes, hdrlen: int | None = None) -> bytes:
    """One record as the kernel writes it (for test doubles)."""
    head = hdrlen or abi.bpf_hdr
    out = bytearray(head)
    struct.pack_into("IIH", out, abi.bpf_timeval, len(frame), len(frame), head)
    out += frame
    out += bytes(-len(out) % abi.bpf_align)
    return bytes(out)
