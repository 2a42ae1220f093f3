"""GRO by hand: write TCP segments with send_multiple and check what the receiving socket got.

The test plays the server side of a TCP connection from inside the TUN device: it answers the
kernel's SYN, then writes 20 data segments in one send_multiple call. tunlab coalesces them
into one super-packet (GSO TCPV4, gso_size 1000); the kernel accepts it and the socket reads
exactly the 20 000 bytes.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tunlab import packets as pk
from tunlab.devices import VIRTIO_NET_HDR_LEN, GROTable
from tunlab.devices.offload import coalesce
from tunlab.testing import assert_coalesced, assert_gso_seen

SERVER, CLIENT, PORT = "198.18.0.2", "198.18.0.1", 8000
SEGMENT, COUNT = 1000, 20


def read_tcp(dev, flags_wanted: int) -> dict[str, int]:
    """Read frames until a TCP packet with these flags; returns its ports and numbers."""
    while True:
        frame = dev.recv()[VIRTIO_NET_HDR_LEN:]
        ip = pk.parse_ip(frame)
        if ip.proto != pk.IPPROTO_TCP:
            continue
        sport, _dport, seq, ack, _off, flags = struct.unpack_from("!HHIIBB", ip.payload)
        if flags & flags_wanted == flags_wanted:
            return {"sport": sport, "seq": seq, "ack": ack}


@pytest.mark.tun_device(offload=True, ipv4=f"{CLIENT}/24")
def test_send_multiple_coalesces_and_the_socket_gets_every_byte(tun_device, capture) -> None:
    dev, peer = tun_device.device, tun_device.peer
    client = peer.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex((SERVER, PORT))

    syn = read_tcp(dev, 0x02)  # the kernel's SYN
    isn = 7_000_000
    synack = pk.tcp_packet(SERVER, CLIENT, PORT, syn["sport"], seq=isn, ack=syn["seq"] + 1, flags=0x12)
    dev.send(bytes(VIRTIO_NET_HDR_LEN) + synack)
    read_tcp(dev, 0x10)  # its ACK: the connection is established

    data = bytes((i * 7) & 0xFF for i in range(SEGMENT * COUNT))
    segments = [
        pk.tcp_packet(
            SERVER,
            CLIENT,
            PORT,
            syn["sport"],
            data[i : i + SEGMENT],
            seq=isn + 1 + i,
            ack=syn["seq"] + 1,
            flags=0x10,
        )
        for i in range(0, len(data), SEGMENT)
    ]
    # what send_multiple will write: one super-packet standing for all 20 segments
    merged = coalesce(segments)
    assert_coalesced([len(m) - VIRTIO_NET_HDR_LEN for m in merged], segments=COUNT, min_ratio=COUNT)

    with capture(tun_device) as cap:
        dev.send_multiple(GROTable(), [bytes(VIRTIO_NET_HDR_LEN) + s for s in segments], VIRTIO_NET_HDR_LEN)
        client.setblocking(True)
        client.settimeout(5)
        got = b""
        while len(got) < len(data):
            got += client.recv(1 << 16)
    client.close()

    assert got == data  # every byte, in order
    # the kernel received one GSO packet of 20 x 1000 bytes on the TUN interface
    assert_gso_seen(cap, gso_type="tcpv4", gso_size=SEGMENT, min_count=1, outgoing=False)
