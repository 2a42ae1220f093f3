"""GRO coalescing: IP packets -> what to write to an offload device (header + packet each).

TCP segments of one flow whose sequence numbers continue exactly merge into one super-packet
the kernel segments again (or delivers as one skb). UDP datagrams of one flow merge into a
GSO_UDP_L4 super-packet when asked (the device must have USO). The batch is the window:
nothing is kept between calls. Checksums of every candidate are verified in one pass.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tunlab.devices.offload import _csum as _cs
from tunlab.devices.offload import _impl as _impl
from tunlab.devices.offload._virtio import (
    GSO_NONE_HEADER,
    HDR_STRUCT,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
)

MAX_PACKET = 65535
MAX_UDP_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
_ACK, _PSH = 0x10, 0x08
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

Bytes = bytes | bytearray | memoryview


class _Item:
    """A growing super-packet: the head's headers plus the payload chunks merged so far."""

    __slots__ = (
        "chunks",
        "gso",
        "head",
        "hlen",
        "ipattr",
        "iph",
        "merged",
        "opts",
        "plen",
        "psh",
        "seq",
        "tcp",
        "version",
    )

    def __init__(
        self,
        head: bytes,
        version: int,
        iph: int,
        hlen: int,
        seq: int,
        psh: bool,
        ipattr: bytes,
        opts: bytes,
        tcp: bool,
    ) -> None:
        self.head = head  # the first packet in sequence order (its headers lead the output)
        self.version = version
        self.iph = iph
        self.hlen = hlen  # IP + L4 header length
        self.seq = seq
        self.psh = psh
        self.ipattr = ipattr
        self.opts = opts
        self.tcp = tcp
        self.plen = len(head) - hlen
        self.gso = self.plen
        self.merged = 0
        self.chunks: list[Bytes] = [memoryview(head)[hlen:]]


class GROTable:
    """Reusable scratch state for coalesce()/send_multiple (tun-rs's name): cleared per batch."""

    def __init__(self) -> None:
        self.tcp: dict[bytes, list[_Item]] = {}
        self.udp: dict[bytes, _Item] = {}
        self.entries: list[_Item | Bytes | None] = []

    def reset(self) -> None:
        """Forget the flows seen so far (the next batch starts afresh)."""
        self.tcp.clear()
        self.udp.clear()
        self.entries.clear()


def _classify(pkt: Bytes, udp_gro: bool) -> tuple[int, int, int] | None:
    """(version, IP header length, L4 header length) of a GRO candidate, else None."""
    n = len(pkt)
    if n < 28 or n > MAX_PACKET:
        return None
    b0 = pkt[0]
    if b0 == 0x45:  # IPv4 without options
        if (pkt[2] << 8 | pkt[3]) != n or (pkt[6] & 0x3F or pkt[7]):  # length, MF / offset
            return None
        proto, iph = pkt[9], 20
    elif b0 >> 4 == 6:
        if (pkt[4] << 8 | pkt[5]) != n - 40:
            return None
        proto, iph = pkt[6], 40  # extension headers are never candidates
    else:
        return None
    if proto == 6:
        if n < iph + 20:
            return None
        thl = (pkt[iph + 12] >> 4) * 4
        flags = pkt[iph + 13]
        if thl < 20 or n <= iph + thl or flags not in (_ACK, _ACK | _PSH):
            return None
        return b0 >> 4, iph, thl
    if proto == 17 and udp_gro:
        if n <= iph + 8 or (pkt[iph + 4] << 8 | pkt[iph + 5]) != n - iph:
            return None
        if b0 == 0x45 and pkt[iph + 6] == 0 and pkt[iph + 7] == 0:
            return None  # IPv4 UDP without checksum: never merged
        return b0 >> 4, iph, 8
    return None


def _checksums_ok(packets: list[Bytes], iphs: list[int]) -> list[bool]:
    """Verify the L4 checksum (and the IPv4 header checksum) of each packet in one pass."""
    np = _cs.numpy_module()
    total = sum(len(p) for p in packets)
    pseudo = []
    for p, iph in zip(packets, iphs, strict=True):
        if iph == 20:
            addrs = int.from_bytes(p[12:20], "big")
            proto = p[9]
        else:
            addrs = int.from_bytes(p[8:40], "big")
            proto = p[6]
        pseudo.append(addrs + proto + len(p) - iph)
    if np is not None and total >= 16384:
        parts: list[Bytes] = []
        bounds: list[int] = []
        pos = 0
        for p, iph in zip(packets, iphs, strict=True):
            bounds.append(pos >> 1)
            bounds.append((pos + iph) >> 1)
            parts.append(p)
            pos += len(p)
            if len(p) & 1:
                parts.append(b"\0")
                pos += 1
        words = np.frombuffer(b"".join(parts), dtype=">u2")
        sums = np.add.reduceat(words, np.asarray(bounds), dtype=np.uint64).tolist()
        ok = []
        for i, iph in enumerate(iphs):
            ip_ok = iph != 20 or sums[2 * i] % 0xFFFF == 0
            ok.append(ip_ok and (sums[2 * i + 1] + pseudo[i]) % 0xFFFF == 0)
        return ok
    ones_sum = _cs.ones_sum
    return [
        (iph != 20 or ones_sum(p[:20]) == 0) and ones_sum(p[iph:], ps) == 0
        for p, iph, ps in zip(packets, iphs, pseudo, strict=True)
    ]


def coalesce(
    packets: Sequence[Bytes],
    *,
    udp_gro: bool = False,
    table: GROTable | None = None,
    l2_len: int = 0,
) -> list[bytes]:
    """Merge what can be merged; every output is a 10-byte virtio-net header + one IP packet.

    Unmergeable packets (bad checksum, IP options, IPv6 extension headers, fragments, TCP
    flags other than ACK / ACK|PSH, ...) come back alone and unchanged with a GSO_NONE header.
    Each output stands at the position of its first input packet. With l2_len (TAP), each
    packet starts with a link header of that length; only identical link headers merge.
    """
    if l2_len:
        return _coalesce_l2(packets, udp_gro, table, l2_len)
    return [item for _, item in _coalesce_ip(packets, udp_gro, table)]


def _coalesce_ip(packets: Sequence[Bytes], udp_gro: bool, table: GROTable | None) -> list[tuple[int, bytes]]:
    """coalesce() on IP packets, each output paired with the index of its first packet."""
    fast = _impl.fast
    if fast is not None:
        outputs: list[tuple[int, bytes]] = fast.coalesce_ip(packets, udp_gro)
        return outputs
    tab = table if table is not None else GROTable()
    tab.reset()
    entries = tab.entries
    kinds = [_classify(p, udp_gro) for p in packets]
    cand = [i for i, k in enumerate(kinds) if k is not None]
    valid = _checksums_ok([packets[i] for i in cand], [kinds[i][1] for i in cand])  # type: ignore[index]
    ok = dict(zip(cand, valid, strict=True))
    for i, pkt in enumerate(packets):
        kind = kinds[i]
        if kind is None or not ok[i]:
            entries.append(pkt)
            continue
        version, iph, l4h = kind
        if version == 4:
            ipattr = bytes((pkt[1], pkt[6] >> 5, pkt[8]))  # ToS, DF/MF, TTL
            addrs = bytes(pkt[12:20])
        else:
            ipattr = bytes(pkt[0:4]) + bytes((pkt[7],))  # traffic class, flow label, hop limit
            addrs = bytes(pkt[8:40])
        at = _At(pkt, version, iph, iph + l4h, ipattr, addrs)
        entries.append(_add_udp(tab, at) if l4h == 8 else _add_tcp(tab, at))
    out = [(i, _emit(e)) for i, e in enumerate(entries) if e is not None]
    tab.reset()
    return out


@dataclass
class _At:
    """Where a candidate packet's parts are: its IP version, header lengths and flow identity."""

    pkt: Bytes
    version: int
    iph: int
    hlen: int
    ipattr: bytes
    addrs: bytes

    @property
    def plen(self) -> int:
        return len(self.pkt) - self.hlen


def _add_udp(tab: GROTable, at: _At) -> _Item | None:
    """Append a UDP datagram to its flow's item (None: merged), or start a new item."""
    pkt, hlen, plen = at.pkt, at.hlen, at.plen
    key = at.addrs + bytes(pkt[at.iph : at.iph + 4])
    item = tab.udp.get(key)
    if (
        item is not None
        and not item.tcp
        and item.ipattr == at.ipattr
        and item.plen % item.gso == 0
        and plen <= item.gso
        and item.merged + 1 < MAX_UDP_SEGMENTS
        and hlen + item.plen + plen <= MAX_PACKET
    ):
        item.chunks.append(memoryview(pkt)[hlen:])
        item.plen += plen
        item.merged += 1
        return None
    new = _Item(bytes(pkt), at.version, at.iph, hlen, 0, False, at.ipattr, b"", False)
    tab.udp[key] = new
    return new


def _add_tcp(tab: GROTable, at: _At) -> _Item | None:
    """Append or prepend a TCP segment to an item of its flow (None: merged), or start one."""
    pkt, iph, hlen, plen, ipattr = at.pkt, at.iph, at.hlen, at.plen, at.ipattr
    key = at.addrs + bytes(pkt[iph : iph + 4]) + bytes(pkt[iph + 8 : iph + 12])  # ports, ACK
    seq = _U32.unpack_from(pkt, iph + 4)[0]
    psh = bool(pkt[iph + 13] & _PSH)
    opts = bytes(pkt[iph + 20 : hlen])
    items = tab.tcp.setdefault(key, [])
    for item in reversed(items):
        if item.hlen != hlen or item.opts != opts or item.ipattr != ipattr:
            continue
        if hlen + item.plen + plen > MAX_PACKET:
            continue
        if seq == (item.seq + item.plen) & 0xFFFFFFFF:  # append
            if item.psh or item.plen % item.gso or plen > item.gso:
                continue
            item.chunks.append(memoryview(pkt)[hlen:])
            item.plen += plen
            item.psh = psh
        elif (seq + plen) & 0xFFFFFFFF == item.seq:  # prepend
            if psh or plen < item.gso or (plen > item.gso and item.merged):
                continue
            item.chunks.insert(0, memoryview(pkt)[hlen:])
            item.head = bytes(pkt)
            item.seq = seq
            item.plen += plen
            item.gso = plen
        else:
            continue
        item.merged += 1
        return None
    new = _Item(bytes(pkt), at.version, iph, hlen, seq, psh, ipattr, opts, True)
    items.append(new)
    return new


def _coalesce_l2(frames: Sequence[Bytes], udp_gro: bool, table: GROTable | None, l2_len: int) -> list[bytes]:
    """Coalesce Ethernet frames: group by link header, coalesce the IP packets, put it back."""
    ip_types = (b"\x08\x00", b"\x86\xdd")
    groups: dict[bytes, list[int]] = {}
    for i, f in enumerate(frames):
        if len(f) > l2_len and bytes(f[l2_len - 2 : l2_len]) in ip_types:
            groups.setdefault(bytes(f[:l2_len]), []).append(i)
    out: dict[int, bytes] = {}
    for link, members in groups.items():
        packets = [memoryview(frames[i])[l2_len:] for i in members]
        for pos, item in _coalesce_ip(packets, udp_gro, table):
            out[members[pos]] = _with_link(item, link)
    grouped = {i for members in groups.values() for i in members}
    result = []
    for i, f in enumerate(frames):
        if i in out:
            result.append(out[i])
        elif i not in grouped:
            result.append(GSO_NONE_HEADER + bytes(f))
    return result


def _with_link(item: bytes, link: bytes) -> bytes:
    vnet = bytearray(item[:10])
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = HDR_STRUCT.unpack(vnet)
    if gso_type or flags:
        n = len(link)
        vnet = bytearray(HDR_STRUCT.pack(flags, gso_type, hdr_len + n, gso_size, csum_start + n, csum_offset))
    return b"".join((vnet, link, item[10:]))


def _emit(entry: _Item | Bytes) -> bytes:
    if not isinstance(entry, _Item):
        return GSO_NONE_HEADER + bytes(entry)
    item = entry
    if item.merged == 0:
        return GSO_NONE_HEADER + item.head
    iph, hlen = item.iph, item.hlen
    head = bytearray(item.head[:hlen])
    total = hlen + item.plen
    l4_len = total - iph
    if item.version == 4:
        _U16.pack_into(head, 2, total)
        head[10:12] = b"\0\0"
        _U16.pack_into(head, 10, _cs.checksum(head[:20]))
        addrs = int.from_bytes(head[12:20], "big")
        proto = head[9]
    else:
        _U16.pack_into(head, 4, l4_len)
        addrs = int.from_bytes(head[8:40], "big")
        proto = head[6]
    # CHECKSUM_PARTIAL: the field holds the folded (not complemented) pseudo-header sum
    pseudo = (addrs + proto + l4_len) % 0xFFFF
    if item.tcp:
        if item.psh:
            head[iph + 13] |= _PSH
        _U16.pack_into(head, iph + 16, pseudo)
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4 if item.version == 4 else VIRTIO_NET_HDR_GSO_TCPV6
        csum_offset = 16
    else:
        _U16.pack_into(head, iph + 4, l4_len)
        _U16.pack_into(head, iph + 6, pseudo)
        gso_type = VIRTIO_NET_HDR_GSO_UDP_L4
        csum_offset = 6
    vnet = HDR_STRUCT.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hlen, item.gso, iph, csum_offset)
    return b"".join((vnet, head, *item.chunks))
