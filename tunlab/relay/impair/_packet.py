"""What an impairment does to a packet's bytes: mark ECN CE, flip one bit.

Pure byte work on IP packets (TUN) or Ethernet frames (TAP, `l2=True`); no I/O.
"""

from __future__ import annotations

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3


def ip_offset(pkt: bytes | bytearray | memoryview, l2: bool) -> int | None:
    """Where the IP header starts (None: not IPv4/IPv6, or too short to tell)."""
    if not l2:
        return 0 if len(pkt) >= 20 and pkt[0] >> 4 in (4, 6) else None
    if len(pkt) < 34:
        return None
    ethertype = pkt[12] << 8 | pkt[13]
    return 14 if ethertype in (ETH_P_IP, ETH_P_IPV6) and pkt[14] >> 4 in (4, 6) else None


def ecn_field(pkt: bytes | bytearray | memoryview, l2: bool) -> int | None:
    """The packet's ECN codepoint (0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE), None if not IP."""
    off = ip_offset(pkt, l2)
    if off is None:
        return None
    if pkt[off] >> 4 == 4:
        return pkt[off + 1] & 3
    return (pkt[off + 1] >> 4) & 3


def mark_ce(pkt: bytes | bytearray | memoryview, l2: bool) -> bytes | None:
    """The packet with ECN set to CE (IPv4 header checksum patched, RFC 1624), or None when it
    cannot be marked (Not-ECT or not IP): netem then drops it. A CE packet comes back as is."""
    ecn = ecn_field(pkt, l2)
    if ecn is None or ecn == NOT_ECT:
        return None
    if ecn == CE:
        return bytes(pkt)
    out = bytearray(pkt)
    off = ip_offset(out, l2)
    assert off is not None
    if out[off] >> 4 == 4:
        old = out[off] << 8 | out[off + 1]
        out[off + 1] |= CE
        new = out[off] << 8 | out[off + 1]
        csum = out[off + 10] << 8 | out[off + 11]
        # HC' = ~(~HC + ~m + m')  (RFC 1624 eqn. 3), in 16-bit ones' complement
        total = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        csum = ~total & 0xFFFF
        out[off + 10], out[off + 11] = csum >> 8, csum & 0xFF
    else:
        out[off + 1] |= CE << 4
    return bytes(out)


def flip_bit(pkt: bytes | bytearray | memoryview, offset: int, bit: int) -> bytes:
    """A copy of pkt with bit `bit` (0..7) of byte `offset` inverted."""
    out = bytearray(pkt)
    out[offset] ^= 1 << bit
    return bytes(out)
