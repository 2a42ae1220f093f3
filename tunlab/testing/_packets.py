"""Small pure builders and parsers for IPv4/IPv6, ICMP, UDP, TCP, Ethernet, ARP and NDP.

Enough to answer pings, ARP and neighbour solicitations from a TUN/TAP device and to craft test
traffic, without scapy. Every function validates lengths and raises ValueError on short input.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from tunlab.devices.offload._csum import checksum, ones_sum, pseudo_header_sum

__all__ = [
    "BROADCAST_MAC",
    "ETH_P_ARP",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPAddress",
    "IPPacket",
    "UDPDatagram",
    "arp_reply",
    "echo_reply",
    "ethernet",
    "ip_packet",
    "ipv4_header",
    "ipv6_header",
    "l4_checksum_ok",
    "mac_bytes",
    "neighbor_advert",
    "parse_ethernet",
    "parse_ip",
    "parse_udp",
    "tcp_packet",
    "udp_packet",
]

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def mac_bytes(mac: str | bytes) -> bytes:
    """A MAC address as 6 bytes ("02:00:5e:00:53:01" or bytes)."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        return mac
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return raw


@dataclass(frozen=True)
class IPPacket:
    """The parts of an IP packet that tests look at."""

    version: int
    src: IPAddress
    dst: IPAddress
    proto: int
    header_len: int
    payload: bytes
    ttl: int

    @property
    def total_len(self) -> int:
        """The packet's length from its IP header (the IPv6 payload length plus 40)."""
        return self.header_len + len(self.payload)


def parse_ip(packet: bytes | bytearray | memoryview) -> IPPacket:
    """Parse an IPv4 or IPv6 packet (IPv6 extension headers are not walked)."""
    pkt = bytes(packet)
    if not pkt:
        raise ValueError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if len(pkt) < 20:
            raise ValueError("IPv4 packet shorter than 20 bytes")
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        if ihl < 20 or total < ihl or len(pkt) < total:
            raise ValueError("IPv4 header lengths are inconsistent")
        return IPPacket(
            4,
            ipaddress.IPv4Address(pkt[12:16]),
            ipaddress.IPv4Address(pkt[16:20]),
            pkt[9],
            ihl,
            pkt[ihl:total],
            pkt[8],
        )
    if version == 6:
        if len(pkt) < 40:
            raise ValueError("IPv6 packet shorter than 40 bytes")
        plen = struct.unpack_from("!H", pkt, 4)[0]
        if len(pkt) < 40 + plen:
            raise ValueError("IPv6 payload length exceeds the packet")
        return IPPacket(
            6,
            ipaddress.IPv6Address(pkt[8:24]),
            ipaddress.IPv6Address(pkt[24:40]),
            pkt[6],
            40,
            pkt[40 : 40 + plen],
            pkt[7],
        )
    raise ValueError(f"not an IP packet (version {version})")


def ipv4_header(
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    proto: int,
    payload_len: int,
    *,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """A 20-byte IPv4 header with its checksum, for a payload of the given length."""
    hdr = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            tos,
            20 + payload_len,
            ident & 0xFFFF,
            0x4000 if dont_fragment else 0,
            ttl,
            proto,
            0,
            src.packed,
            dst.packed,
        )
    )
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr)


def ipv6_header(
    src: ipaddress.IPv6Address,
    dst: ipaddress.IPv6Address,
    next_header: int,
    payload_len: int,
    *,
    hop_limit: int = 64,
    traffic_class: int = 0,
) -> bytes:
    """A 40-byte IPv6 header for a payload of the given length."""
    first = (6 << 28) | (traffic_class << 20)
    return struct.pack("!IHBB16s16s", first, payload_len, next_header, hop_limit, src.packed, dst.packed)


def ip_packet(src: IPAddress, dst: IPAddress, proto: int, payload: bytes, **kw: int) -> bytes:
    """An IPv4 or IPv6 packet around payload (the version follows the addresses)."""
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return ipv4_header(src, dst, proto, len(payload), **kw) + payload  # type: ignore[arg-type]
    if isinstance(src, ipaddress.IPv6Address) and isinstance(dst, ipaddress.IPv6Address):
        return ipv6_header(src, dst, proto, len(payload), **kw) + payload
    raise ValueError("src and dst must be the same IP version")


def _l4_checksum(src: IPAddress, dst: IPAddress, proto: int, segment: bytes) -> int:
    return checksum(segment, pseudo_header_sum(proto, src.packed, dst.packed, len(segment)))


def udp_packet(
    src: IPAddress | str, dst: IPAddress | str, sport: int, dport: int, payload: bytes, **kw: int
) -> bytes:
    """A complete UDP/IP packet with a valid checksum."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    csum = _l4_checksum(s, d, IPPROTO_UDP, bytes(seg)) or 0xFFFF
    struct.pack_into("!H", seg, 6, csum)
    return ip_packet(s, d, IPPROTO_UDP, bytes(seg), **kw)


def tcp_packet(
    src: IPAddress | str,
    dst: IPAddress | str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = 0x10,
    window: int = 65535,
    options: bytes = b"",
    **kw: int,
) -> bytes:
    """A complete TCP/IP packet with a valid checksum (options padded to 4 bytes)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    opts = options + b"\x00" * (-len(options) % 4)
    off = (20 + len(opts)) // 4
    seg = bytearray(
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            off << 4,
            flags,
            window,
            0,
            0,
        )
        + opts
        + payload
    )
    struct.pack_into("!H", seg, 16, _l4_checksum(s, d, IPPROTO_TCP, bytes(seg)))
    return ip_packet(s, d, IPPROTO_TCP, bytes(seg), **kw)


@dataclass(frozen=True)
class UDPDatagram:
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    payload: bytes
    checksum_ok: bool


def parse_udp(packet: bytes | bytearray | memoryview) -> UDPDatagram:
    """The UDP datagram in an IP packet (addresses, ports, payload); ValueError if it holds none."""
    ip = parse_ip(packet)
    if ip.proto != IPPROTO_UDP or len(ip.payload) < 8:
        raise ValueError("not a UDP packet")
    sport, dport, length, csum = struct.unpack_from("!HHHH", ip.payload)
    if length < 8 or length > len(ip.payload):
        raise ValueError("UDP length is inconsistent")
    seg = ip.payload[:length]
    ok = (csum == 0 and ip.version == 4) or (
        ones_sum(seg, pseudo_header_sum(IPPROTO_UDP, ip.src.packed, ip.dst.packed, length)) == 0
    )
    return UDPDatagram(ip.src, ip.dst, sport, dport, seg[8:], ok)


def l4_checksum_ok(packet: bytes | bytearray | memoryview) -> bool:
    """True when the TCP/UDP/ICMPv6 checksum (or the IPv4 header checksum) verifies."""
    ip = parse_ip(packet)
    raw = bytes(packet)
    if ip.version == 4 and ones_sum(raw[: ip.header_len]) != 0:
        return False
    if ip.proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6):
        pseudo = pseudo_header_sum(ip.proto, ip.src.packed, ip.dst.packed, len(ip.payload))
        return ones_sum(ip.payload, pseudo) == 0
    if ip.proto == IPPROTO_ICMP:
        return ones_sum(ip.payload) == 0
    return True


def echo_reply(request: bytes | bytearray | memoryview) -> bytes | None:
    """The ICMP/ICMPv6 echo reply answering request, or None if it is not an echo request."""
    try:
        ip = parse_ip(request)
    except ValueError:
        return None
    body = bytearray(ip.payload)
    if ip.version == 4 and ip.proto == IPPROTO_ICMP and len(body) >= 8 and body[0] == 8:
        body[0] = 0
        body[2:4] = b"\0\0"
        struct.pack_into("!H", body, 2, checksum(body))
        return ip_packet(ip.dst, ip.src, IPPROTO_ICMP, bytes(body))
    if ip.version == 6 and ip.proto == IPPROTO_ICMPV6 and len(body) >= 8 and body[0] == 128:
        body[0] = 129
        body[2:4] = b"\0\0"
        struct.pack_into("!H", body, 2, _l4_checksum(ip.dst, ip.src, IPPROTO_ICMPV6, bytes(body)))
        return ip_packet(ip.dst, ip.src, IPPROTO_ICMPV6, bytes(body))
    return None


# ---- Ethernet, ARP, NDP -------------------------------------------------------------------------
def ethernet(dst: str | bytes, src: str | bytes, ethertype: int, payload: bytes) -> bytes:
    """An Ethernet frame: dst, src (MACs as "02:.." or 6 bytes), ethertype and payload."""
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def parse_ethernet(frame: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int, bytes]:
    """(dst MAC, src MAC, ethertype, payload)."""
    raw = bytes(frame)
    if len(raw) < 14:
        raise ValueError("Ethernet frame shorter than 14 bytes")
    return raw[0:6], raw[6:12], struct.unpack_from("!H", raw, 12)[0], raw[14:]


def arp_reply(
    frame: bytes | bytearray | memoryview, mac: str | bytes, owned: IPAddress | None = None
) -> bytes | None:
    """Answer an ARP request (for `owned`, or for any address when None) as `mac`."""
    try:
        _dst, src, etype, arp = parse_ethernet(frame)
    except ValueError:
        return None
    if etype != ETH_P_ARP or len(arp) < 28:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", arp)
    if (htype, ptype, hlen, plen, op) != (1, ETH_P_IP, 6, 4, 1):
        return None
    sha, spa, tpa = arp[8:14], arp[14:18], arp[24:28]
    if owned is not None and ipaddress.IPv4Address(tpa) != owned:
        return None
    me = mac_bytes(mac)
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2) + me + tpa + sha + spa
    return ethernet(src, me, ETH_P_ARP, body)


def neighbor_advert(
    frame: bytes | bytearray | memoryview, mac: str | bytes, owned: IPAddress | None = None
) -> bytes | None:
    """Answer an IPv6 neighbour solicitation (for `owned`, or any target when None) as `mac`."""
    try:
        _dst, src_mac, etype, payload = parse_ethernet(frame)
        ip = parse_ip(payload)
    except ValueError:
        return None
    body = ip.payload
    if etype != ETH_P_IPV6 or ip.proto != IPPROTO_ICMPV6 or len(body) < 24 or body[0] != 135:
        return None
    target = ipaddress.IPv6Address(body[8:24])
    if owned is not None and target != owned:
        return None
    me = mac_bytes(mac)
    # flags: solicited + override; option 2 = target link-layer address
    na = bytearray(struct.pack("!BBHI", 136, 0, 0, 0x60000000) + target.packed + b"\x02\x01" + me)
    dst_ip = ip.src
    assert isinstance(dst_ip, ipaddress.IPv6Address)
    struct.pack_into("!H", na, 2, _l4_checksum(target, dst_ip, IPPROTO_ICMPV6, bytes(na)))
    pkt = ipv6_header(target, dst_ip, IPPROTO_ICMPV6, len(na), hop_limit=255) + bytes(na)
    return ethernet(src_mac, me, ETH_P_IPV6, pkt)
