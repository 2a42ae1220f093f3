"""GRO coalescing rules, one behaviour per test (merging must never change the byte stream)."""

from __future__ import annotations

import struct

import pytest

from tests.offload.helpers import TS_OPTS, V4, V6, tcp_fields, tcp_flow, udp_flow
from tunlab import packets as pk
from tunlab.devices._batch import frames_to_send
from tunlab.devices._layer import Layer
from tunlab.devices.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    GROTable,
    VirtioNetHdr,
    coalesce,
    split,
)


def parts(out: bytes) -> tuple[VirtioNetHdr, bytes]:
    return VirtioNetHdr.decode(out), out[10:]


def alone(out: bytes, original: bytes) -> bool:
    hdr, pkt = parts(out)
    return hdr == VirtioNetHdr() and pkt == original


@pytest.mark.parametrize(
    ("addrs", "gso_type", "iph"),
    [(V4, VIRTIO_NET_HDR_GSO_TCPV4, 20), (V6, VIRTIO_NET_HDR_GSO_TCPV6, 40)],
)
def test_consecutive_segments_merge(accel, addrs, gso_type, iph) -> None:
    segs = tcp_flow(10, 1000, addrs=addrs, last=123)
    (out,) = coalesce(segs)
    hdr, pkt = parts(out)
    assert hdr.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert hdr.gso_type == gso_type
    assert hdr.gso_size == 1000
    assert hdr.csum_start == iph
    assert hdr.csum_offset == 16
    assert hdr.hdr_len == iph + 32
    assert len(pkt) == iph + 32 + 9 * 1000 + 123
    ip = pk.parse_ip(pkt)
    assert ip.total_len == len(pkt)
    if addrs is V4:  # a valid IPv4 header checksum
        from tunlab.devices.offload import ones_sum

        assert ones_sum(pkt[:20]) == 0
    # the checksum field holds the folded pseudo-header sum (CHECKSUM_PARTIAL)
    partial = (
        int.from_bytes(ip.src.packed, "big") + int.from_bytes(ip.dst.packed, "big") + 6 + len(pkt) - iph
    ) % 0xFFFF
    assert struct.unpack_from("!H", pkt, iph + 16)[0] == partial
    assert split(hdr, pkt) == segs


def test_prepend_merges_out_of_order_head(accel) -> None:
    segs = tcp_flow(3, 500)
    out = coalesce([segs[1], segs[2], segs[0]])
    assert len(out) == 1
    hdr, pkt = parts(out[0])
    assert tcp_fields(pkt)["seq"] == 1000
    assert split(hdr, pkt) == segs


def test_output_stands_at_the_first_packets_position(accel) -> None:
    a = tcp_flow(3, 500)
    b = tcp_flow(3, 500, addrs=("198.18.0.3", "198.18.0.4"))
    other = pk.udp_packet("198.18.0.9", "198.18.0.8", 1, 2, b"x")
    out = coalesce([other, a[0], b[0], a[1], b[1], a[2], b[2]])
    assert len(out) == 3
    assert alone(out[0], other)
    assert split(*parts(out[1])) == a
    assert split(*parts(out[2])) == b


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda s: s[1], id="different-ack"),
        pytest.param(lambda s: s[2], id="different-options"),
        pytest.param(lambda s: s[3], id="different-ttl"),
        pytest.param(lambda s: s[4], id="different-tos"),
        pytest.param(lambda s: s[5], id="df-differs"),
        pytest.param(lambda s: s[6], id="sequence-gap"),
    ],
)
def test_different_flows_or_headers_do_not_merge(accel, mutate) -> None:
    base = tcp_flow(1, 500)[0]
    second_payload = bytes(500)
    variants = [
        None,
        pk.tcp_packet(*V4, 40000, 80, second_payload, seq=1500, ack=8, options=TS_OPTS, ident=101),
        pk.tcp_packet(
            *V4,
            40000,
            80,
            second_payload,
            seq=1500,
            ack=7,
            options=TS_OPTS[:-1] + b"\x01",
            ident=101,
        ),
        pk.tcp_packet(*V4, 40000, 80, second_payload, seq=1500, ack=7, options=TS_OPTS, ident=101, ttl=63),
        pk.tcp_packet(*V4, 40000, 80, second_payload, seq=1500, ack=7, options=TS_OPTS, ident=101, tos=4),
        _no_df(pk.tcp_packet(*V4, 40000, 80, second_payload, seq=1500, ack=7, options=TS_OPTS, ident=101)),
        pk.tcp_packet(*V4, 40000, 80, second_payload, seq=1501, ack=7, options=TS_OPTS, ident=101),
    ]
    second = mutate(variants)
    out = coalesce([base, second])
    assert len(out) == 2
    assert alone(out[0], base)
    assert alone(out[1], second)


def _no_df(packet: bytes) -> bytes:
    p = bytearray(packet)
    p[6] &= ~0x40
    p[10:12] = b"\0\0"
    from tunlab.devices.offload import checksum

    struct.pack_into("!H", p, 10, checksum(p[:20]))
    return bytes(p)


def test_nothing_merges_after_psh(accel) -> None:
    segs = tcp_flow(4, 500, flags=0x10)
    psh = bytearray(segs[1])
    psh[20 + 13] = 0x18
    struct.pack_into("!H", psh, 36, 0)
    fixed = pk.tcp_packet(
        *V4,
        40000,
        80,
        tcp_fields(segs[1])["payload"],
        seq=1500,
        ack=7,
        flags=0x18,
        options=TS_OPTS,
        ident=101,
    )
    out = coalesce([segs[0], fixed, segs[2], segs[3]])
    assert len(out) == 2
    first_hdr, first = parts(out[0])
    assert tcp_fields(first)["flags"] & 0x08  # PSH carried on the merged packet
    assert split(first_hdr, first) == [segs[0], fixed]
    assert split(*parts(out[1])) == segs[2:]


def test_nothing_merges_after_a_shorter_segment(accel) -> None:
    a = tcp_flow(2, 500, last=300)  # 500, 300
    c = pk.tcp_packet(*V4, 40000, 80, bytes(500), seq=1800, ack=7, options=TS_OPTS, ident=102)
    out = coalesce(a + [c])
    assert len(out) == 2
    assert split(*parts(out[0])) == a
    assert alone(out[1], c)


def test_larger_segment_does_not_append(accel) -> None:
    a = tcp_flow(1, 500)[0]
    b = pk.tcp_packet(*V4, 40000, 80, bytes(600), seq=1500, ack=7, options=TS_OPTS, ident=101)
    out = coalesce([a, b])
    assert [alone(o, p) for o, p in zip(out, [a, b])] == [True, True]


@pytest.mark.parametrize("flags", [0x02, 0x12, 0x11, 0x04, 0x30, 0x50, 0x90])
def test_only_ack_and_ack_psh_merge(accel, flags) -> None:
    segs = tcp_flow(2, 500)
    odd = pk.tcp_packet(*V4, 40000, 80, bytes(500), seq=1500, ack=7, flags=flags, options=TS_OPTS, ident=101)
    out = coalesce([segs[0], odd])
    assert len(out) == 2
    assert alone(out[1], odd)


def test_pure_acks_do_not_merge(accel) -> None:
    acks = [pk.tcp_packet(*V4, 40000, 80, b"", seq=1000, ack=7 + i) for i in range(3)]
    out = coalesce(acks)
    assert [alone(o, p) for o, p in zip(out, acks)] == [True] * 3


def test_bad_checksum_stays_alone_unchanged(accel) -> None:
    segs = tcp_flow(3, 500)
    bad = bytearray(segs[1])
    bad[-1] ^= 0xFF
    out = coalesce([segs[0], bytes(bad), segs[2]])
    assert len(out) == 3
    assert alone(out[1], bytes(bad))


def test_bad_ipv4_header_checksum_stays_alone(accel) -> None:
    segs = tcp_flow(2, 500)
    bad = bytearray(segs[1])
    bad[10] ^= 1
    out = coalesce([segs[0], bytes(bad)])
    assert alone(out[1], bytes(bad))


def test_ip_options_fragments_and_extension_headers_stay_alone(accel) -> None:
    base = tcp_flow(2, 200)
    with_opts = bytearray(base[1])
    # IHL 6 with a 4-byte NOP option block: not a candidate
    with_opts = bytearray(with_opts[:20] + b"\x01\x01\x01\x00" + with_opts[20:])
    with_opts[0] = 0x46
    struct.pack_into("!H", with_opts, 2, len(with_opts))
    frag = bytearray(base[1])
    frag[6] |= 0x20  # MF
    v6 = tcp_flow(2, 200, addrs=V6)
    ext = bytearray(v6[1][:40] + bytes([6, 0, 1, 4, 0, 0, 0, 0]) + v6[1][40:])
    ext[6] = 0
    struct.pack_into("!H", ext, 4, len(ext) - 40)
    for odd, first in ((with_opts, base[0]), (frag, base[0]), (ext, v6[0])):
        out = coalesce([first, bytes(odd)])
        assert len(out) == 2
        assert alone(out[1], bytes(odd))


def test_udp_merges_only_when_asked(accel) -> None:
    segs = udp_flow(5, 1200, last=40)
    assert [alone(o, p) for o, p in zip(coalesce(segs), segs)] == [True] * 5
    (out,) = coalesce(segs, udp_gro=True)
    hdr, pkt = parts(out)
    assert (hdr.gso_type, hdr.gso_size, hdr.csum_offset, hdr.hdr_len) == (
        VIRTIO_NET_HDR_GSO_UDP_L4,
        1200,
        6,
        28,
    )
    assert struct.unpack_from("!H", pkt, 24)[0] == len(pkt) - 20
    assert split(hdr, pkt) == segs


def test_ipv4_udp_without_checksum_never_merges(accel) -> None:
    segs = [bytearray(s) for s in udp_flow(3, 100)]
    for s in segs:
        s[26:28] = b"\0\0"
    out = coalesce([bytes(s) for s in segs], udp_gro=True)
    assert len(out) == 3


def test_merged_packet_never_exceeds_65535(accel) -> None:
    segs = tcp_flow(60, 1448)
    out = coalesce(segs)
    assert len(out) == 2
    sizes = [len(parts(o)[1]) for o in out]
    assert max(sizes) <= 65535
    assert sum(len(split(*parts(o))) for o in out) == 60
    assert [p for o in out for p in split(*parts(o))] == segs


def test_udp_segment_limit(accel) -> None:
    segs = udp_flow(70, 100)
    out = coalesce(segs, udp_gro=True)
    assert [len(split(*parts(o))) for o in out] == [64, 6]


def test_table_is_reusable_and_keeps_nothing_between_batches(accel) -> None:
    table = GROTable()
    segs = tcp_flow(4, 500)
    assert len(coalesce(segs[:2], table=table)) == 1
    assert len(coalesce(segs[2:], table=table)) == 1
    assert not table.tcp
    assert not table.entries


def test_ethernet_frames(accel) -> None:
    link = bytes.fromhex("0200000000020200000000010800")
    other_link = bytes.fromhex("0200000000030200000000010800")
    segs = tcp_flow(3, 500)
    arp = bytes.fromhex("ffffffffffff0200000000010806") + bytes(28)
    frames = [link + segs[0], arp, other_link + segs[1], link + segs[1], link + segs[2]]
    out = coalesce(frames, l2_len=14)
    assert len(out) == 3
    hdr, frame = parts(out[0])
    assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4
    assert (hdr.csum_start, hdr.hdr_len) == (34, 14 + 52)
    assert frame[:14] == link
    assert split(hdr, frame[14:]) == segs and hdr.gso_size == 500
    assert alone(out[1], arp)
    assert alone(out[2], other_link + segs[1])
    assert VirtioNetHdr.decode(out[1]).gso_type == VIRTIO_NET_HDR_GSO_NONE


def test_vlan_tagged_frames_go_alone_and_the_rest_still_merge(accel) -> None:
    """frames_to_send (send_multiple and Framed): a tagged frame never merges, others do."""
    link = bytes.fromhex("0200000000020200000000010800")
    tagged = bytes.fromhex("020000000002020000000001810000050800") + tcp_flow(1, 500)[0]
    segs = tcp_flow(3, 500)
    frames = [link + segs[0], tagged, link + segs[1], link + segs[2]]
    out = frames_to_send(
        [b"\0" * 10 + f for f in frames], 10, vnet=True, layer=Layer.L2, udp_gro=False, table=None
    )
    assert len(out) == 2
    hdr, frame = parts(bytes(out[0]))
    assert hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 and frame[:14] == link
    assert split(hdr, frame[14:]) == segs
    assert alone(bytes(out[1]), tagged)
