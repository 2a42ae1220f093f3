"""GSO split: one super-packet read from an offload device -> the IP packets it stands for.

Everything is recomputed from the packet itself (the kernel's hdr_len is not trusted); the
header is only asked what to do (gso_type, gso_size, NEEDS_CSUM). Per-segment checksums of the
payload are summed in one vectorised pass when numpy is available.
"""

from __future__ import annotations

import struct
from typing import Any

from tunlab.devices.offload import _csum as _cs
from tunlab.devices.offload import _impl as _impl
from tunlab.devices.offload._virtio import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    VirtioNetHdr,
)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
_IPV6_EXT = {0, 43, 60, 51}  # hop-by-hop, routing, destination options, AH (fragment: 44)
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_IP_LEN_ID = struct.Struct("!HH")

Bytes = bytes | bytearray | memoryview


def l4_offset(pkt: Bytes) -> tuple[int, int, int]:
    """(IP version, length of the IP header incl. IPv6 extension headers, L4 protocol)."""
    n = len(pkt)
    if n < 1:
        raise ValueError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if n < 20:
            raise ValueError(f"IPv4 packet of {n} bytes is shorter than its header")
        ihl = (pkt[0] & 0x0F) * 4
        if ihl < 20 or ihl > n:
            raise ValueError(f"IPv4 header length {ihl} is invalid for a {n}-byte packet")
        return 4, ihl, pkt[9]
    if version == 6:
        if n < 40:
            raise ValueError(f"IPv6 packet of {n} bytes is shorter than its header")
        nh, off = pkt[6], 40
        while nh in _IPV6_EXT or nh == 44:
            if off + 8 > n:
                raise ValueError("IPv6 extension header runs past the packet")
            if nh == 44:
                raise ValueError("an IPv6 fragment cannot be a GSO packet")
            ext_len = (pkt[off + 1] + 2) * 4 if nh == 51 else (pkt[off + 1] + 1) * 8
            nh, off = pkt[off], off + ext_len
        if off > n:
            raise ValueError("IPv6 extension headers run past the packet")
        return 6, off, nh
    raise ValueError(f"not an IP packet (version {version})")


def complete_checksum(hdr: VirtioNetHdr, packet: Bytes) -> bytes:
    """Finish a CHECKSUM_PARTIAL packet: the field holds the pseudo-header sum, add the rest."""
    pkt = bytearray(packet)
    start, at = hdr.csum_start, hdr.csum_start + hdr.csum_offset
    if start >= len(pkt) or at + 2 > len(pkt):
        raise ValueError(
            f"csum_start {start} / csum_offset {hdr.csum_offset} point outside a {len(pkt)}-byte packet"
        )
    initial = _U16.unpack_from(pkt, at)[0]
    pkt[at : at + 2] = b"\0\0"
    _U16.pack_into(pkt, at, _cs.checksum(memoryview(pkt)[start:], initial))
    return bytes(pkt)


def split(hdr: VirtioNetHdr, packet: Bytes) -> list[bytes]:
    """The IP packets a frame read from an offload device stands for (header removed).

    TCP: sequence numbers advance per segment, FIN/PSH stay on the last segment only, CWR on
    the first; IPv4 ID increments; every segment gets complete checksums. A GSO_NONE frame
    with NEEDS_CSUM gets its checksum completed. Malformed input raises ValueError.
    """
    gso_type = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if not packet:
        raise ValueError("empty packet")
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return [complete_checksum(hdr, packet)]
        return [bytes(packet)]
    if gso_type not in (
        VIRTIO_NET_HDR_GSO_TCPV4,
        VIRTIO_NET_HDR_GSO_TCPV6,
        VIRTIO_NET_HDR_GSO_UDP_L4,
    ):
        raise ValueError(f"unsupported GSO type {hdr.gso_name}")
    if hdr.gso_size == 0:
        raise ValueError("GSO packet with gso_size 0")
    version, iph, proto = l4_offset(packet)
    if gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and version != 4:
        raise ValueError("GSO type TCPV4 on a non-IPv4 packet")
    if gso_type == VIRTIO_NET_HDR_GSO_TCPV6 and version != 6:
        raise ValueError("GSO type TCPV6 on a non-IPv6 packet")
    n = len(packet)
    if gso_type == VIRTIO_NET_HDR_GSO_UDP_L4:
        if proto != IPPROTO_UDP:
            raise ValueError(f"GSO type UDP_L4 on protocol {proto}")
        hdr_len = iph + 8
    else:
        if proto != IPPROTO_TCP:
            raise ValueError(f"GSO type {hdr.gso_name} on protocol {proto}")
        if n < iph + 20:
            raise ValueError("TCP header runs past the packet")
        thl = (packet[iph + 12] >> 4) * 4
        if thl < 20:
            raise ValueError(f"TCP data offset {thl} is below 20")
        hdr_len = iph + thl
    if n < hdr_len:
        raise ValueError(f"headers ({hdr_len} bytes) run past the {n}-byte packet")
    if n == hdr_len:
        raise ValueError("GSO packet without payload")
    if version == 4 and iph + (n - hdr_len) > 0xFFFF:
        raise ValueError("IPv4 super-packet longer than 65535 bytes")
    longest = hdr_len + min(hdr.gso_size, n - hdr_len)  # the largest segment, headers included
    if version == 4 and longest > 0xFFFF:
        raise ValueError(
            f"gso_size {hdr.gso_size}: an IPv4 segment of {longest} bytes overflows its length field"
        )
    if version == 6 and longest - 40 > 0xFFFF:
        raise ValueError(
            f"gso_size {hdr.gso_size}: an IPv6 segment payload of {longest - 40} bytes "
            "overflows its length field"
        )
    if proto == IPPROTO_UDP and longest - iph > 0xFFFF:
        raise ValueError(
            f"gso_size {hdr.gso_size}: a UDP segment of {longest - iph} bytes overflows its length field"
        )
    return _segment(packet, version, iph, proto, hdr_len, hdr.gso_size)


def _numpy_payload_sums(data: bytes, start: int, gso: int) -> Any:
    """_payload_sums as an int64 array: one reduceat over native 32-bit words.

    The one's-complement sum does not depend on byte order: the folded result is swapped back.
    Needs start and gso to be multiples of 4 and at least one full word of payload.
    """
    np = _cs.numpy_module()
    n = len(data) - start
    count = -(-n // gso)
    words = np.frombuffer(data, dtype=_cs.NATIVE_U32, offset=start, count=n >> 2)
    sums = np.add.reduceat(words, np.arange(0, words.size, gso >> 2), dtype=np.uint64)
    sums = (sums % 0xFFFF).astype(np.int64)
    if _cs.LITTLE_ENDIAN:
        sums = ((sums & 0xFF) << 8) | (sums >> 8)
    if sums.size < count:
        sums = np.append(sums, 0)  # the last slice is shorter than one 32-bit word
    tail = n & 3
    if tail:
        rest = data[len(data) - tail :]
        sums[-1] += int.from_bytes(rest + b"\0" * (tail & 1), "big")
    return sums


def _payload_sums(data: bytes, start: int, gso: int) -> list[int]:
    """One's-complement sum (mod 0xFFFF, big-endian words) of each gso-sized slice of data[start:]."""
    if _cs.numpy_module() is not None and len(data) - start >= 4096 and gso % 4 == 0 and start % 4 == 0:
        return list(_numpy_payload_sums(data, start, gso).tolist())
    from_bytes = int.from_bytes
    out = []
    for off in range(start, len(data), gso):
        chunk = data[off : off + gso]
        if len(chunk) & 1:
            chunk += b"\0"
        out.append(from_bytes(chunk, "big") % 0xFFFF)
    return out


def segment_headers(
    data: bytes, version: int, iph: int, proto: int, hdr_len: int, gso: int
) -> list[tuple[bytes, int, int]]:
    """For each segment: (its IP+L4 headers, payload start, payload end) within data."""
    n = len(data)
    ip_head = bytearray(data[:iph])
    l4 = bytearray(data[iph:hdr_len])
    from_bytes = int.from_bytes
    if version == 4:
        src, dst = data[12:16], data[16:20]
        ident0 = _U16.unpack_from(ip_head, 4)[0]
        ip_head[2:6] = bytes(4)  # total length and ID are added per segment
        ip_head[10:12] = b"\0\0"
        ip_base = from_bytes(ip_head, "big") % 0xFFFF
    else:
        src, dst = data[8:24], data[24:40]
        ident0 = ip_base = 0
    addr_sum = (from_bytes(src, "big") + from_bytes(dst, "big") + proto) % 0xFFFF
    is_tcp = proto == IPPROTO_TCP
    if is_tcp:
        seq0 = _U32.unpack_from(l4, 4)[0]
        flags0 = l4[13]
        l4[4:8] = bytes(4)
        l4[13] = 0
        l4[16:18] = b"\0\0"
        csum_at = iph + 16
    else:
        seq0 = flags0 = 0
        l4[4:8] = bytes(4)
        csum_at = iph + 6
    l4_base = (from_bytes(l4, "big") + addr_sum) % 0xFFFF
    template = bytes(ip_head + l4)
    sums = _payload_sums(data, hdr_len, gso)
    last = len(sums) - 1
    out: list[tuple[bytes, int, int]] = []
    pack_u16 = _U16.pack_into
    for i, payload_sum in enumerate(sums):
        off = hdr_len + i * gso
        end = min(off + gso, n)
        total = hdr_len + end - off
        l4_len = total - iph
        h = bytearray(template)
        if version == 4:
            ident = (ident0 + i) & 0xFFFF
            _IP_LEN_ID.pack_into(h, 2, total, ident)
            pack_u16(h, 10, ~((ip_base + total + ident) % 0xFFFF) & 0xFFFF)
        else:
            pack_u16(h, 4, total - 40)  # counts extension headers
        if is_tcp:
            seq = (seq0 + i * gso) & 0xFFFFFFFF
            flags = flags0
            if i != last:
                flags &= ~(_TCP_FIN | _TCP_PSH)
            if i:
                flags &= ~_TCP_CWR
            _U32.pack_into(h, iph + 4, seq)
            h[iph + 13] = flags
            total_sum = l4_base + (seq >> 16) + (seq & 0xFFFF) + flags + l4_len + payload_sum
            csum = ~(total_sum % 0xFFFF) & 0xFFFF
        else:
            pack_u16(h, iph + 4, l4_len)
            csum = ~((l4_base + 2 * l4_len + payload_sum) % 0xFFFF) & 0xFFFF
            if csum == 0:
                csum = 0xFFFF  # UDP: 0 means "no checksum"
        pack_u16(h, csum_at, csum)
        out.append((bytes(h), off, end))
    return out


def _segment(data: Bytes, version: int, iph: int, proto: int, hdr_len: int, gso: int) -> list[bytes]:
    fast = _impl.fast
    if fast is not None:
        segments: list[bytes] = fast.segment(data, version, iph, proto, hdr_len, gso)
        return segments
    data = bytes(data)
    np = _cs.numpy_module()
    n = len(data)
    if np is not None and n - hdr_len >= 4 * gso and hdr_len % 4 == 0 and gso % 4 == 0:
        rows, lengths = _segment_rows_numpy(data, version, iph, proto, hdr_len, gso)
        return [rows[i, :length].tobytes() for i, length in enumerate(lengths)]
    view = memoryview(data)
    return [b"".join((h, view[a:b])) for h, a, b in segment_headers(data, version, iph, proto, hdr_len, gso)]


def _segment_rows_numpy(
    data: bytes, version: int, iph: int, proto: int, hdr_len: int, gso: int
) -> tuple[Any, list[int]]:
    """All segments at once: a (count, hdr_len + gso) uint8 array and each row's length.

    The same arithmetic as segment_headers, on whole columns: the per-segment fields (length,
    ID, sequence number, flags, checksums) are written through big-endian views of the rows.
    """
    np = _cs.numpy_module()
    n = len(data)
    payload = n - hdr_len
    count = -(-payload // gso)
    full = payload // gso
    sums = _numpy_payload_sums(data, hdr_len, gso)
    idx = np.arange(count, dtype=np.int64)
    seg_len = np.full(count, gso, dtype=np.int64)
    seg_len[-1] = payload - (count - 1) * gso
    total = hdr_len + seg_len
    l4_len = total - iph
    rows = np.empty((count, hdr_len + gso), dtype=np.uint8)
    template = np.frombuffer(data, dtype=np.uint8, count=hdr_len)
    rows[:, :hdr_len] = template
    body = np.frombuffer(data, dtype=np.uint8, offset=hdr_len)
    rows[:full, hdr_len:] = body[: full * gso].reshape(full, gso)
    if full < count:
        rows[full, hdr_len : hdr_len + payload - full * gso] = body[full * gso :]
    u16 = rows.view(">u2")
    u32 = rows.view(">u4")
    from_bytes = int.from_bytes
    head = bytearray(data[:hdr_len])
    if version == 4:
        ident0 = _U16.unpack_from(head, 4)[0]
        head[2:6] = bytes(4)
        head[10:12] = b"\0\0"
        ip_base = from_bytes(head[:iph], "big") % 0xFFFF
        ident = (ident0 + idx) & 0xFFFF
        u16[:, 1] = total
        u16[:, 2] = ident
        u16[:, 5] = ~((ip_base + total + ident) % 0xFFFF) & 0xFFFF
        src, dst = data[12:16], data[16:20]
    else:
        u16[:, 2] = total - 40  # counts extension headers
        src, dst = data[8:24], data[24:40]
    addr_sum = from_bytes(src, "big") + from_bytes(dst, "big") + proto
    l4 = head[iph:hdr_len]
    if proto == IPPROTO_TCP:
        seq0 = _U32.unpack_from(l4, 4)[0]
        flags0 = l4[13]
        l4[4:8] = bytes(4)
        l4[13] = 0
        l4[16:18] = b"\0\0"
        l4_base = (from_bytes(l4, "big") + addr_sum) % 0xFFFF
        seq = (seq0 + idx * gso) & 0xFFFFFFFF
        flags = np.full(count, flags0 & ~(_TCP_FIN | _TCP_PSH), dtype=np.int64)
        flags[1:] &= ~_TCP_CWR
        flags[-1] = flags0 if count == 1 else flags0 & ~_TCP_CWR
        u32[:, (iph + 4) // 4] = seq
        rows[:, iph + 13] = flags
        total_sum = l4_base + (seq >> 16) + (seq & 0xFFFF) + flags + l4_len + sums
        u16[:, (iph + 16) // 2] = ~(total_sum % 0xFFFF) & 0xFFFF
    else:
        l4[4:8] = bytes(4)
        l4_base = (from_bytes(l4, "big") + addr_sum) % 0xFFFF
        u16[:, (iph + 4) // 2] = l4_len
        csum = ~((l4_base + 2 * l4_len + sums) % 0xFFFF) & 0xFFFF
        csum[csum == 0] = 0xFFFF  # UDP: 0 means "no checksum"
        u16[:, (iph + 6) // 2] = csum
    return rows, total.tolist()


def link_header_len(frame: Bytes) -> int:
    """Length of the Ethernet header (with up to two VLAN tags) in front of an IP packet."""
    off = 12
    while len(frame) >= off + 2 and frame[off] << 8 | frame[off + 1] in (0x8100, 0x88A8):
        off += 4
    if len(frame) < off + 2:
        raise ValueError("Ethernet frame shorter than its header")
    return off + 2


def split_frame(hdr: VirtioNetHdr, frame: Bytes) -> list[bytes]:
    """split() for TAP devices: frames carry an Ethernet header, repeated on every segment."""
    gso_type = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        return split(hdr, frame)  # csum_start counts the Ethernet header already
    l2 = link_header_len(frame)
    link = bytes(frame[:l2])
    return [link + p for p in split(hdr, memoryview(frame)[l2:])]


def packets_of(frame: Bytes, l2: bool) -> list[bytes]:
    """The packets (Ethernet frames when l2) a frame read from an offload device stands for:
    its virtio-net header decoded, the super-packet split, checksums completed. The compiled
    core where it plans the frame, else split()/split_frame(), which word what is wrong."""
    fast = _impl.fast
    if fast is not None:
        packets: list[bytes] | None = fast.split_bytes(frame, l2)
        if packets is not None:
            return packets
    if len(frame) <= VIRTIO_NET_HDR_LEN:
        raise ValueError(f"read {len(frame)} bytes: shorter than a virtio-net header")
    hdr = VirtioNetHdr.decode(frame)
    body = memoryview(frame)[VIRTIO_NET_HDR_LEN:]
    return split_frame(hdr, body) if l2 else split(hdr, body)
