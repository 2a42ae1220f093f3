"""The wire link and the datagram device under it: a node's interface whose frames cross in
UDP datagrams, as a link between two hosts is carried (here both ends on loopback)."""

from __future__ import annotations

import os
import socket

import pytest

from tests.support import require_tool
from tunlab.devices._backend import FrameFormat
from tunlab.devices._datagram import DatagramDevice
from tunlab.devices._layer import Layer
from tunlab.devices.offload._virtio import VirtioNetHdr
from tunlab.errors import DeployError, TopologyError
from tunlab.testing._packets import parse_ip, tcp_packet
from tunlab.topologies import Lab, load_text
from tunlab.topologies._links import wire


def _pair() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.connect(b.getsockname())
    b.connect(a.getsockname())
    b.settimeout(5)
    return a, b


def test_a_frame_crosses_as_one_datagram_and_comes_back_whole() -> None:
    a, b = _pair()
    fmt = FrameFormat(prefix=10, virtio=True, tcp_gso=True)
    dev, peer = DatagramDevice(a, Layer.L3, fmt), DatagramDevice(b, Layer.L3, fmt)
    try:
        assert dev.frame_format.fd_frames and dev.frame_format.virtio
        frame = bytes(10) + tcp_packet("198.18.0.1", "198.18.0.2", 1, 2, b"x" * 1000)
        assert dev.send(frame) == len(frame)
        buf = bytearray(70000)
        n = peer.recv_into(buf)
        assert bytes(buf[:n]) == frame
        handoff = dev.handoff()
        rebuilt = DatagramDevice.from_handoff([os.dup(handoff.fds[0])], handoff.spec)  # as a worker gets it
        assert rebuilt.frame_format == dev.frame_format
        rebuilt.close()
    finally:
        dev.close()
        peer.close()


def test_a_super_packet_too_large_for_a_datagram_is_split_not_dropped() -> None:
    a, b = _pair()
    fmt = FrameFormat(prefix=10, virtio=True, tcp_gso=True)
    dev = DatagramDevice(a, Layer.L3, fmt)
    payload = bytes(range(256)) * 255 + b"e" * 215  # the largest IPv4 packet: 65,535 bytes
    packet = tcp_packet("198.18.0.1", "198.18.0.2", 1000, 2000, payload, seq=7)
    hdr = VirtioNetHdr(flags=1, gso_type=1, hdr_len=40, gso_size=1448, csum_start=20, csum_offset=16)
    frame = hdr.encode() + packet
    assert len(frame) > 65_507  # more than IPv4 UDP carries
    try:
        assert dev.send(frame) == len(frame)
        got = b""
        count = 0
        while len(got) < len(payload):
            datagram = b.recv(70000)
            assert datagram[:10] == bytes(10)  # each a plain packet (GSO_NONE)
            ip = parse_ip(datagram[10:])
            got += ip.payload[20:]
            count += 1
        assert got == payload
        assert count == -(-len(payload) // 1448)
    finally:
        dev.close()
        b.close()


WIRES = """
name: wires
nodes: {{a: {{}}, b: {{}}}}
links:
  - type: wire
    workers: {workers}
    endpoints: [{{node: a, interface: w0, ipv4: [198.18.77.1/24]}}]
    local: 127.0.0.1
    port: {pa}
    peer: 127.0.0.1
    peer_port: {pb}
    impair: {{a_to_b: {{delay: 20ms}}}}
  - type: wire
    workers: {workers}
    endpoints: [{{node: b, interface: w0, ipv4: [198.18.77.2/24]}}]
    local: 127.0.0.1
    port: {pb}
    peer: 127.0.0.1
    peer_port: {pa}
"""


@pytest.mark.root
@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_two_wires_meet_over_udp_with_the_impairment_on_the_way_out(needs_root: None, workers: str) -> None:
    pa, pb = wire.reserve("127.0.0.1"), wire.reserve("127.0.0.1")
    topo = load_text(WIRES.format(pa=pa, pb=pb, workers=workers), "yaml")
    with Lab(topo) as lab:
        done = lab.node("a").run(["ping", "-c3", "-i0.2", "-W2", "198.18.77.2"])
        assert done.ok, done.text
        rtts = [float(x.split("time=")[1].split()[0]) for x in done.text.splitlines() if "time=" in x]
        assert min(rtts) >= 20.0  # a_to_b leaves a delayed; the reply is not
        assert lab.link(0).stats()["a_to_b_stats"]["sent"] >= 3
        dev = lab.device("a", "w0")
        assert dev.backend.frame_format.virtio  # super-packets cross whole


@pytest.mark.root
def test_tcp_crosses_a_wire(needs_root: None) -> None:
    require_tool("iperf3")
    pa, pb = wire.reserve("127.0.0.1"), wire.reserve("127.0.0.1")
    topo = load_text(
        WIRES.format(pa=pa, pb=pb, workers="processes").replace("{a_to_b: {delay: 20ms}}", "null"), "yaml"
    )
    with Lab(topo) as lab:
        server = lab.node("b").popen(["iperf3", "-s", "-1"])
        try:
            done = lab.node("a").run(
                ["iperf3", "-c", "198.18.77.2", "-t", "1", "-J", "--connect-timeout", "3000"]
            )
            if not done.ok:  # the server may not listen yet
                done = lab.node("a").run(["iperf3", "-c", "198.18.77.2", "-t", "1", "-J"])
            assert done.ok, done.text
            assert '"bytes"' in done.text
        finally:
            server.kill()
            server.wait()
        stats = lab.relay_stats()
        sent = next(iter(stats.values()))["a_to_b"]
        assert sent["super_frames_in"] > 0  # super-packets crossed as datagrams


@pytest.mark.root
def test_a_wire_that_cannot_bind_fails_the_deploy_naming_the_address(needs_root: None) -> None:
    topo = load_text(
        WIRES.format(pa=0, pb=1, workers="threads")
        .replace("peer_port: 0", "peer_port: 2")
        .replace("local: 127.0.0.1\n    port: 0", "local: 198.18.99.99\n    port: 0", 1),
        "yaml",
    )
    with pytest.raises(
        DeployError, match=r"198\.18\.99\.99:0 -> 127\.0\.0\.1:1.*local address one of this host's"
    ):
        Lab(topo).up()


def test_wire_fields_are_checked() -> None:
    one = "name: w\nnodes: {a: {}, b: {}}\nlinks: [{type: wire, endpoints: [%s], local: 127.0.0.1, peer: %s, peer_port: 1}]\n"
    with pytest.raises(TopologyError, match=r"links\[0\].peer: .*'nowhere' is not an IPv4 or IPv6 address"):
        load_text(one % ("'a:w'", "nowhere"), "yaml")
    with pytest.raises(
        TopologyError, match=r"links\[0\].endpoints: a wire link has exactly 1 endpoints, not 2"
    ):
        load_text(one % ("'a:w', 'b:w'", "127.0.0.1"), "yaml")
