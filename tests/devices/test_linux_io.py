"""Traffic through real TUN/TAP devices: the kernel on one side, the library on the other."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

import pytest

from tests.support import read_until, udp_to
from tunlab import DeviceBuilder, Layer
from tunlab import packets as pk

pytestmark = pytest.mark.root


@pytest.mark.tun_device(name="tun0", ipv4="198.18.0.1/24")
def test_kernel_ping_answered_by_the_library(tun_device) -> None:
    """Uses the project's own pytest plugin: a device and its kernel-side peer."""
    dev, peer = tun_device.device, tun_device.peer
    ping = peer.popen(["ping", "-c", "1", "-W", "5", "198.18.0.2"], stdout=-1, stderr=-1)
    request = read_until(dev, lambda f: pk.echo_reply(f) is not None)
    ip = pk.parse_ip(request)
    assert (str(ip.src), str(ip.dst)) == ("198.18.0.1", "198.18.0.2")
    dev.send(pk.echo_reply(request))
    out, _ = ping.communicate(timeout=10)
    assert ping.returncode == 0, out
    assert b"1 received" in out


@pytest.mark.parametrize(
    ("tun_device", "local", "remote", "family"),
    [
        ({"ipv4": "198.18.3.1/24"}, "198.18.3.1", "198.18.3.2", socket.AF_INET),
        ({"ipv4": None, "ipv6": "2001:db8:3::1/64"}, "2001:db8:3::1", "2001:db8:3::2", socket.AF_INET6),
    ],
    indirect=["tun_device"],
    ids=["ipv4", "ipv6"],
)
def test_udp_both_ways(tun_device, local, remote, family) -> None:
    dev = tun_device.device
    with tun_device.peer.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((local, 0))
        sport = sock.getsockname()[1]
        sock.sendto(b"kernel to library", (remote, 4000))
        frame = read_until(dev, udp_to(4000))
        udp = pk.parse_udp(frame)
        assert udp.payload == b"kernel to library"
        assert (str(udp.src), udp.sport, str(udp.dst)) == (local, sport, remote)
        assert udp.checksum_ok

        dev.send(pk.udp_packet(remote, local, 4000, sport, b"library to kernel"))
        sock.settimeout(5)
        data, peer = sock.recvfrom(2048)
        assert data == b"library to kernel"
        assert (peer[0], peer[1]) == (remote, 4000)


def test_tap_answers_arp_and_neighbour_solicitation(ns) -> None:
    tap_mac = "02:00:5e:00:53:10"
    peer_mac = "02:00:5e:00:53:99"
    dev = (
        DeviceBuilder()
        .name("tap0")
        .layer(Layer.L2)
        .mac_addr(tap_mac)
        .ipv4("198.18.4.1", 24)
        .ipv6("2001:db8:4::1", 64)
        .netns(ns.name)
        .build_sync()
    )
    with (
        dev,
        ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4,
        ns.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6,
    ):
        assert dev.mac_address == tap_mac
        s4.sendto(b"v4 over tap", ("198.18.4.2", 5000))

        def arp_request(frame: bytes) -> bool:
            return pk.arp_reply(frame, peer_mac, ipaddress.IPv4Address("198.18.4.2")) is not None

        req = read_until(dev, arp_request)
        dst, src, etype, _ = pk.parse_ethernet(req)
        assert (dst, src, etype) == (pk.BROADCAST_MAC, pk.mac_bytes(tap_mac), pk.ETH_P_ARP)
        dev.send(pk.arp_reply(req, peer_mac))
        frame = read_until(dev, lambda f: pk.parse_ethernet(f)[2] == pk.ETH_P_IP)
        dst, _, _, payload = pk.parse_ethernet(frame)
        assert dst == pk.mac_bytes(peer_mac)  # the kernel learned our answer
        assert pk.parse_udp(payload).payload == b"v4 over tap"

        s6.sendto(b"v6 over tap", ("2001:db8:4::2", 5000))
        target = ipaddress.IPv6Address("2001:db8:4::2")
        sol = read_until(dev, lambda f: pk.neighbor_advert(f, peer_mac, target) is not None)
        dev.send(pk.neighbor_advert(sol, peer_mac, target))

        def v6_udp(f: bytes) -> bool:
            _, _, et, pl = pk.parse_ethernet(f)
            return et == pk.ETH_P_IPV6 and pk.parse_ip(pl).proto == pk.IPPROTO_UDP

        frame = read_until(dev, v6_udp)
        dst, _, _, payload = pk.parse_ethernet(frame)
        assert dst == pk.mac_bytes(peer_mac)
        assert pk.parse_udp(payload).payload == b"v6 over tap"


@pytest.mark.parametrize("pi", [True, False])
def test_packet_information_header(ns, pi: bool) -> None:
    dev = (
        DeviceBuilder().name("tun0").packet_information(pi).ipv4("198.18.5.1", 24).netns(ns.name).build_sync()
    )
    with dev, ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert dev.packet_information is pi
        sock.bind(("198.18.5.1", 0))
        sock.sendto(b"pi", ("198.18.5.2", 6000))
        strip = 4 if pi else 0
        frame = read_until(dev, lambda f: udp_to(6000)(f[strip:]))
        if pi:
            flags, proto = struct.unpack("!HH", frame[:4])
            assert (flags, proto) == (0, pk.ETH_P_IP)
        else:
            assert frame[0] >> 4 == 4
        reply = pk.udp_packet("198.18.5.2", "198.18.5.1", 6000, sock.getsockname()[1], b"back")
        dev.send((struct.pack("!HH", 0, pk.ETH_P_IP) if pi else b"") + reply)
        sock.settimeout(5)
        assert sock.recv(100) == b"back"


def test_vectored_io(ns) -> None:
    with (
        DeviceBuilder().name("tun0").ipv4("198.18.6.1", 24).netns(ns.name).build_sync() as dev,
        ns.socket() as sock,
    ):
        sock.bind(("198.18.6.1", 7777))
        pkt = pk.udp_packet("198.18.6.2", "198.18.6.1", 1, 7777, b"scatter-gather")
        assert dev.send_vectored([pkt[:10], memoryview(pkt)[10:30], bytearray(pkt[30:])]) == len(pkt)
        sock.settimeout(5)
        assert sock.recv(100) == b"scatter-gather"
        sock.sendto(b"readv", ("198.18.6.2", 9))
        select.select([dev.fileno()], [], [], 5)
        while True:
            head, rest = bytearray(20), bytearray(2000)
            n = dev.recv_vectored([head, rest])
            frame = bytes(head + rest[: n - 20])
            if udp_to(9)(frame):
                break
        assert pk.parse_udp(frame).payload == b"readv"


def test_multi_queue_spreads_flows_and_loses_nothing(ns) -> None:
    dev = DeviceBuilder().name("tun0").multi_queue(True).ipv4("198.18.7.1", 24).netns(ns.name).build_sync()
    queues = [dev] + [dev.try_clone() for _ in range(3)]
    try:
        for q in queues:
            q.set_nonblocking(True)
            assert q.multi_queue
            assert q.name == "tun0"
        sent = set()
        for flow in range(64):
            with ns.socket() as sock:
                sock.bind(("198.18.7.1", 20000 + flow))
                for n in range(3):
                    payload = f"{flow}:{n}".encode()
                    sock.sendto(payload, ("198.18.7.2", 9000))
                    sent.add(payload)
        got: dict[int, list[bytes]] = {i: [] for i in range(len(queues))}
        deadline = time.monotonic() + 5
        while sum(map(len, got.values())) < len(sent) and time.monotonic() < deadline:
            select.select([q.fileno() for q in queues], [], [], 0.2)
            for i, q in enumerate(queues):
                try:
                    while True:
                        frame = q.recv()
                        if udp_to(9000)(frame):
                            got[i].append(pk.parse_udp(frame).payload)
                except BlockingIOError:
                    pass
        everything = [p for ps in got.values() for p in ps]
        assert sorted(everything) == sorted(sent), "a packet was lost or duplicated"
        used = [i for i, ps in got.items() if ps]
        assert len(used) >= 2, f"all flows landed on one queue: {[len(v) for v in got.values()]}"
        # one flow always lands on one queue
        for i, ps in got.items():
            for p in ps:
                flow = p.split(b":")[0]
                assert all(not x.startswith(flow + b":") for j, xs in got.items() if j != i for x in xs)
    finally:
        for q in queues:
            q.close()


def test_detached_queue_receives_nothing(ns) -> None:
    dev = DeviceBuilder().name("tun0").multi_queue(True).ipv4("198.18.8.1", 24).netns(ns.name).build_sync()
    other = dev.try_clone()
    try:
        other.attach_queue(False)
        other.set_nonblocking(True)
        with ns.socket() as sock:
            for port in range(30000, 30040):
                sock.sendto(b"x", ("198.18.8.2", port))
        read_until(dev, udp_to(30039))
        with pytest.raises(BlockingIOError):
            other.recv()
        other.attach_queue(True)
    finally:
        other.close()
        dev.close()
