"""GSO split against the kernel's contract (virtio_net_hdr semantics, RFC 793/768/8200)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from tests.offload.helpers import V4, V6, tcp_fields, tcp_flow, udp_flow
from tunlab import packets as pk
from tunlab.devices.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VirtioNetHdr,
    split,
)
from tunlab.devices.offload._gso import split_frame


def super_packet(segments: list[bytes]) -> bytes:
    """What the kernel hands over for these segments: the first header, all payloads."""
    first = pk.parse_ip(segments[0])
    ihl = first.header_len
    if first.proto == pk.IPPROTO_TCP:
        l4h = (first.payload[12] >> 4) * 4
    else:
        l4h = 8
    head = bytearray(segments[0][: ihl + l4h])
    body = b"".join(s[ihl + l4h :] for s in segments)
    total = len(head) + len(body)
    if first.version == 4:
        struct.pack_into("!H", head, 2, total)
    else:
        struct.pack_into("!H", head, 4, total - 40)
    if first.proto == pk.IPPROTO_UDP:
        struct.pack_into("!H", head, ihl + 4, total - ihl)
    else:  # FIN/PSH of the last segment are on the super-packet
        head[ihl + 13] |= segments[-1][ihl + 13] & 0x09
    # the kernel leaves the pseudo-header sum in the L4 checksum field (CHECKSUM_PARTIAL)
    at = ihl + (16 if first.proto == pk.IPPROTO_TCP else 6)
    src, dst = first.src.packed, first.dst.packed
    partial = (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + first.proto + total - ihl) % 0xFFFF
    struct.pack_into("!H", head, at, partial)
    return bytes(head) + body


def hdr_for(gso_type: int, gso_size: int, hdr_len: int = 0, csum_start: int = 20) -> VirtioNetHdr:
    return VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, 16)


@pytest.mark.parametrize(
    ("addrs", "gso_type", "proto", "sizes"),
    [
        (V4, VIRTIO_NET_HDR_GSO_TCPV4, "tcp", [140, 140]),
        (V6, VIRTIO_NET_HDR_GSO_TCPV6, "tcp", [160, 160]),
        (V4, VIRTIO_NET_HDR_GSO_UDP_L4, "udp", [128, 128]),
        (V6, VIRTIO_NET_HDR_GSO_UDP_L4, "udp", [148, 148]),
    ],
)
def test_two_segment_sizes(accel, addrs, gso_type, proto, sizes) -> None:
    """200 bytes of payload with gso_size 100 become two packets of header + 100."""
    segs = tcp_flow(2, 100, addrs=addrs, opts=b"") if proto == "tcp" else udp_flow(2, 100, addrs=addrs)
    out = split(hdr_for(gso_type, 100), super_packet(segs))
    assert [len(p) for p in out] == sizes
    assert out == segs
    assert all(pk.l4_checksum_ok(p) for p in out)


@pytest.mark.parametrize("addrs", [V4, V6])
@pytest.mark.parametrize("last", [1448, 1, 700, 1447])
def test_tcp_segments_rebuild_the_stream(accel, addrs, last) -> None:
    segs = tcp_flow(45, 1448, addrs=addrs, last=last, last_flags=0x19 if last != 1448 else 0x18)
    gso_type = VIRTIO_NET_HDR_GSO_TCPV4 if addrs is V4 else VIRTIO_NET_HDR_GSO_TCPV6
    out = split(hdr_for(gso_type, 1448), super_packet(segs))
    assert len(out) == 45
    for i, p in enumerate(out):
        f = tcp_fields(p)
        assert f["seq"] == 1000 + i * 1448
        assert f["ack"] == 7
        assert pk.l4_checksum_ok(p)
        if i < 44:
            assert f["flags"] == 0x10  # FIN and PSH only on the last segment
        else:
            assert f["flags"] == (0x19 if last != 1448 else 0x18)
    assert b"".join(tcp_fields(p)["payload"] for p in out) == b"".join(tcp_fields(s)["payload"] for s in segs)
    if addrs is V4:
        assert [struct.unpack_from("!H", p, 4)[0] for p in out] == list(range(100, 145))
    assert out == segs


def test_cwr_only_on_the_first_segment(accel) -> None:
    segs = tcp_flow(4, 500, opts=b"")
    sp = bytearray(super_packet(segs))
    sp[20 + 13] |= 0x80  # CWR on the super-packet
    out = split(hdr_for(VIRTIO_NET_HDR_GSO_TCPV4 | 0x80, 500), sp)
    assert [tcp_fields(p)["flags"] & 0x80 for p in out] == [0x80, 0, 0, 0]
    assert all(pk.l4_checksum_ok(p) for p in out)


def test_hdr_len_and_csum_start_from_the_kernel_are_not_trusted(accel) -> None:
    segs = tcp_flow(3, 1000)
    sp = super_packet(segs)
    good = split(hdr_for(VIRTIO_NET_HDR_GSO_TCPV4, 1000, hdr_len=52), sp)
    for bogus in (0, 1, 3052, 65535):
        hdr = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, bogus, 1000, 99, 3)
        assert split(hdr, sp) == good == segs


def test_ipv6_payload_length_counts_extension_headers(accel) -> None:
    segs = udp_flow(3, 300, addrs=V6)
    sp = bytearray(super_packet(segs))
    # insert an 8-byte hop-by-hop header (PadN) between the IPv6 header and UDP
    hbh = bytes([17, 0, 1, 4, 0, 0, 0, 0])
    sp = sp[:40] + hbh + sp[40:]
    sp[6] = 0  # next header: hop-by-hop
    struct.pack_into("!H", sp, 4, len(sp) - 40)
    out = split(VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_UDP_L4, 0, 300, 48, 6), sp)
    assert len(out) == 3
    for p, s in zip(out, segs):
        assert struct.unpack_from("!H", p, 4)[0] == len(p) - 40 == 8 + 8 + 300
        assert p[40:48] == hbh
        assert p[48:] == s[40:]


def test_udp_lengths_and_checksums(accel) -> None:
    segs = udp_flow(5, 1200, last=77)
    out = split(hdr_for(VIRTIO_NET_HDR_GSO_UDP_L4, 1200), super_packet(segs))
    assert out == segs
    assert [struct.unpack_from("!H", p, 24)[0] for p in out] == [1208] * 4 + [85]


def test_gso_none_checksum_is_completed(accel) -> None:
    seg = udp_flow(1, 333)[0]
    partial = bytearray(super_packet([seg]))
    assert not pk.l4_checksum_ok(partial)
    hdr = VirtioNetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 20, 6)
    (out,) = split(hdr, partial)
    assert out == seg
    plain = VirtioNetHdr()
    assert split(plain, seg) == [seg]


def test_ethernet_frames_keep_their_link_header(accel) -> None:
    segs = tcp_flow(3, 500)
    link = bytes.fromhex("0200000000020200000000010800")
    frames = split_frame(hdr_for(VIRTIO_NET_HDR_GSO_TCPV4, 500, csum_start=34), link + super_packet(segs))
    assert frames == [link + s for s in segs]


@pytest.mark.parametrize(
    ("hdr", "packet", "message"),
    [
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 20, 16), "tcp4", "gso_size 0"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_UDP, 0, 100, 20, 6), "udp4", "unsupported GSO type"),
        (VirtioNetHdr(1, 9, 0, 100, 20, 6), "udp4", "unsupported GSO type"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV6, 0, 100, 20, 16), "tcp4", "non-IPv6"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 40, 16), "tcp6", "non-IPv4"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 20, 16), "udp4", "protocol 17"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_UDP_L4, 0, 100, 20, 6), "tcp4", "protocol 6"),
        (
            VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 20, 16),
            "short",
            "shorter than its header",
        ),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 20, 16), "nopayload", "without payload"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 20, 16), "badoff", "data offset"),
        (VirtioNetHdr(1, 0, 0, 0, 900, 16), "udp4", "outside"),
        (VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 100, 20, 16), "v5", "not an IP packet"),
    ],
)
def test_malformed_input_raises_value_error(hdr, packet, message) -> None:
    samples = {
        "tcp4": super_packet(tcp_flow(2, 100)),
        "tcp6": super_packet(tcp_flow(2, 100, addrs=V6)),
        "udp4": super_packet(udp_flow(2, 100)),
        "short": super_packet(tcp_flow(2, 100))[:15],
        "nopayload": super_packet(tcp_flow(2, 100))[:52],
        "badoff": super_packet(tcp_flow(2, 100))[:32] + b"\x40" + super_packet(tcp_flow(2, 100))[33:],
        "v5": b"\x55" + bytes(100),
    }
    with pytest.raises(ValueError, match=message):
        split(hdr, samples[packet])


def test_ipv4_id_wraps() -> None:
    segs = tcp_flow(3, 100, ident=0xFFFF)
    out = split(hdr_for(VIRTIO_NET_HDR_GSO_TCPV4, 100), super_packet(segs))
    assert [struct.unpack_from("!H", p, 4)[0] for p in out] == [0xFFFF, 0, 1]
    assert ipaddress.ip_address("198.18.0.1") == pk.parse_ip(out[0]).src
