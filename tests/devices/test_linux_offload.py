"""Offload against the real kernel: super-packets out of a TUN, coalesced packets back in."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support import unique_name
from tunlab import DeviceBuilder, Layer, SyncDevice, traffic
from tunlab import packets as pk
from tunlab._linux.netns import NetNamespace
from tunlab.devices import PacketBatch, offload
from tunlab.devices.offload import (
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_LEN,
    GROTable,
    VirtioNetHdr,
    coalesce,
    split,
)
from tunlab.relay import Relay
from tunlab.relay._direction import Direction

pytestmark = pytest.mark.root


@dataclass
class Pair:
    """Two namespaces, each with a TUN device routed towards the other; we sit in between."""

    ns_a: NetNamespace
    ns_b: NetNamespace
    dev_a: SyncDevice
    dev_b: SyncDevice
    addr_a: str
    addr_b: str
    family: int


def _route(ns: NetNamespace, dev: SyncDevice, dst: str) -> None:
    with ns.iproute() as ipr:
        ipr.route("add", dst=dst, oif=dev.if_index)


@pytest.fixture(params=["ipv4", "ipv6"])
def pair(request, needs_root) -> Iterator[Pair]:
    v6 = request.param == "ipv6"
    ns_a, ns_b = NetNamespace.create(unique_name()), NetNamespace.create(unique_name())
    net_a, net_b, prefix = ("2001:db8:50::", "2001:db8:51::", 64) if v6 else ("198.18.50.", "198.18.51.", 24)
    devs: list[SyncDevice] = []
    try:
        for name, ns, net in (("tuna", ns_a, net_a), ("tunb", ns_b, net_b)):
            builder = DeviceBuilder().name(name).offload(True).netns(ns.name)
            builder = builder.ipv6(f"{net}1", prefix) if v6 else builder.ipv4(f"{net}1", prefix)
            devs.append(builder.build_sync())
        a, b = devs
        _route(ns_a, a, f"{net_b}0/{prefix}")
        _route(ns_b, b, f"{net_a}0/{prefix}")
        yield Pair(ns_a, ns_b, a, b, f"{net_a}1", f"{net_b}1", socket.AF_INET6 if v6 else socket.AF_INET)
    finally:
        for d in devs:
            d.close()
        ns_a.delete()
        ns_b.delete()


def tcp_transfer(pair: Pair, data: bytes) -> bytes:
    """Send data over TCP from A to B through whatever relays the devices; what B received."""
    result = traffic.tcp_stream(traffic.place(pair.ns_a), traffic.place(pair.ns_b), pair.addr_b, data=data)
    return data if result.exact else b"<the stream arrived damaged or incomplete>"


def relayed_transfer(pair: Pair, data: bytes, step: Callable[[SyncDevice, SyncDevice], bool]) -> bytes:
    """tcp_transfer() while a loop relays between the (nonblocking) devices: step(src, dst) for
    each direction moves what src has and says whether there was anything."""
    done = threading.Event()

    def pump() -> None:
        for dev in (pair.dev_a, pair.dev_b):
            dev.set_nonblocking(True)
        while not done.is_set():
            moved = False
            for src, dst in ((pair.dev_a, pair.dev_b), (pair.dev_b, pair.dev_a)):
                try:
                    moved = step(src, dst) or moved
                except BlockingIOError:
                    continue
            if not moved:
                select.select([pair.dev_a.fileno(), pair.dev_b.fileno()], [], [], 0.05)

    t = threading.Thread(target=pump)
    t.start()
    try:
        return tcp_transfer(pair, data)
    finally:
        done.set()
        t.join()


def test_tcp_stream_arrives_as_gso_super_packets(pair: Pair) -> None:
    """Frames read from the sender's TUN are super-packets; split, they are the exact stream."""
    data = os.urandom(3 << 20)
    frames: list[bytes] = []
    stop = threading.Event()

    def relay() -> None:  # record A->B frames, pass everything through unchanged
        fa, fb = pair.dev_a.fileno(), pair.dev_b.fileno()
        while not stop.is_set():
            ready, _, _ = select.select([fa, fb], [], [], 0.1)
            for fd in ready:
                frame = os.read(fd, 65536 + VIRTIO_NET_HDR_LEN)
                if fd == fa:
                    frames.append(frame)
                    os.write(fb, frame)
                else:
                    os.write(fa, frame)

    t = threading.Thread(target=relay)
    t.start()
    try:
        got = tcp_transfer(pair, data)
    finally:
        stop.set()
        t.join()
    assert got == data

    want_type = VIRTIO_NET_HDR_GSO_TCPV4 if pair.family == socket.AF_INET else VIRTIO_NET_HDR_GSO_TCPV6
    supers = [f for f in frames if VirtioNetHdr.decode(f).gso_type == want_type]
    assert supers, "no GSO super-packet crossed the TUN"
    assert max(len(f) for f in supers) - VIRTIO_NET_HDR_LEN > 1500  # above the MTU
    # split every frame: checksums valid, and the payloads are exactly the stream sent
    by_seq: dict[int, bytes] = {}
    first_seq = None
    for f in frames:
        for seg in split(VirtioNetHdr.decode(f), f[VIRTIO_NET_HDR_LEN:]):
            assert pk.l4_checksum_ok(seg)
            ip = pk.parse_ip(seg)
            if ip.proto != pk.IPPROTO_TCP:
                continue
            tcp = ip.payload
            seq = int.from_bytes(tcp[4:8], "big")
            flags = tcp[13]
            if flags & 0x02:  # SYN
                first_seq = (seq + 1) & 0xFFFFFFFF
                continue
            payload = tcp[(tcp[12] >> 4) * 4 :]
            if payload:
                by_seq[seq] = payload
    assert first_seq is not None
    stream = bytearray()
    pos = first_seq
    while pos in by_seq:
        chunk = by_seq[pos]
        stream.extend(chunk)
        pos = (pos + len(chunk)) & 0xFFFFFFFF
    assert bytes(stream) == data


def test_send_multiple_coalesces_and_the_kernel_delivers_byte_exact(pair: Pair) -> None:
    """A->B through recv_multiple (split) and send_multiple (GRO): the socket gets every byte."""
    data = os.urandom(2 << 20)
    merged_batches = []

    def watch(direction: str, packets: list[bytes]) -> list[bytes]:
        if direction is Direction.A_TO_B and len(packets) > 1:
            merged_batches.append((len(packets), len(coalesce(packets))))
        return packets

    with Relay(pair.dev_a, pair.dev_b, mode="batch", hook=watch) as relay:
        got = tcp_transfer(pair, data)
    assert got == data
    assert not relay.stats[Direction.A_TO_B].errors
    assert relay.stats[Direction.A_TO_B].super_frames_in > 0
    assert any(after < before for before, after in merged_batches), "send_multiple never merged"


def test_send_multiple_udp_with_uso(pair: Pair) -> None:
    """Coalesced UDP datagrams (GSO_UDP_L4) come out of the kernel as the original datagrams."""
    if not pair.dev_b.udp_gso:
        pytest.skip("this kernel refused USO (TUN_F_USO4/6 needs Linux >= 6.2)")
    sink = pair.ns_b.socket(pair.family, socket.SOCK_DGRAM)
    sink.bind((pair.addr_b, 0))
    sink.settimeout(5)
    port = sink.getsockname()[1]
    src = pair.addr_a
    payloads = [os.urandom(1200) for _ in range(30)] + [b"tail"]
    packets = []
    for i, p in enumerate(payloads):
        kw = {"ident": i} if pair.family == socket.AF_INET else {}
        packets.append(pk.udp_packet(src, pair.addr_b, 7000, port, p, **kw))
    frames = coalesce(packets, udp_gro=True)
    assert len(frames) == 1  # one super-packet for 31 datagrams
    bufs = [bytes(VIRTIO_NET_HDR_LEN) + p for p in packets]
    written = pair.dev_b.send_multiple(GROTable(), bufs, VIRTIO_NET_HDR_LEN)
    assert written == len(frames[0])
    got = [sink.recv(2048) for _ in payloads]
    sink.close()
    assert got == payloads


def test_recv_multiple_keeps_what_does_not_fit(pair: Pair) -> None:
    """With fewer buffers than segments, the rest is delivered by the next calls."""
    data = os.urandom(256 << 10)
    got_segments: list[bytes] = []
    bufs = [bytearray(2000) for _ in range(4)]
    sizes = [0] * 4
    table = GROTable()

    def step(src: SyncDevice, dst: SyncDevice) -> bool:
        n = src.recv_multiple(bufs, sizes, 0)
        pkts = [bytes(VIRTIO_NET_HDR_LEN) + bytes(bufs[i][: sizes[i]]) for i in range(n)]
        if src is pair.dev_a:
            got_segments.extend(p[VIRTIO_NET_HDR_LEN:] for p in pkts)
        dst.send_multiple(table, pkts, VIRTIO_NET_HDR_LEN)
        return True

    assert relayed_transfer(pair, data, step) == data
    assert all(len(s) <= 1500 for s in got_segments)


@pytest.mark.parametrize("implementation", ["compiled", "python"])
@pytest.mark.parametrize("slots", [128, 3])
def test_a_packet_batch_loop_relays_a_stream_split_and_coalesced(
    pair: Pair, implementation: str, slots: int
) -> None:
    """A user's loop over one PacketBatch per direction: recv_multiple(batch) splits what the
    kernel hands over into MTU-sized packets (several frames per call when queued), and
    send_multiple(table, batch) coalesces them back; the stream arrives byte-exact. With
    3 slots a super-packet takes several calls (the cursor keeps the rest)."""
    if implementation not in offload.available():
        pytest.skip("the compiled offload core is not built here")
    data = os.urandom(3 << 20)
    largest = [0, 0]  # packets in one batch, bytes of the largest packet
    batches = {id(pair.dev_a): PacketBatch(slots), id(pair.dev_b): PacketBatch(slots)}
    table = GROTable()

    def step(src: SyncDevice, dst: SyncDevice) -> bool:
        batch = batches[id(src)]
        n = src.recv_multiple(batch)
        assert n == len(batch) and n <= slots
        if src is pair.dev_a:
            largest[0] = max(largest[0], n)
            largest[1] = max(largest[1], *(len(p) for p in batch))
        dst.send_multiple(table, batch)
        return True

    with offload.using(implementation):
        assert relayed_transfer(pair, data, step) == data
    assert largest[0] > 1, "no super-packet was split into the batch"
    assert largest[1] <= 1500, f"a {largest[1]}-byte packet left the split"


def test_offload_reports_what_is_active(ns) -> None:
    with DeviceBuilder().name("toff").offload(True).netns(ns.name).build_sync() as dev:
        assert dev.tcp_gso
        assert dev.max_frame_size == VIRTIO_NET_HDR_LEN + 65535
        with pytest.raises(ValueError, match="offset >= 10"):
            dev.send_multiple(None, [bytes(60)], 0)
    with DeviceBuilder().name("tplain").netns(ns.name).build_sync() as dev:
        assert not dev.tcp_gso and not dev.udp_gso


@pytest.fixture
def tap_pair(needs_root):
    """Two TAP devices with offload in two namespaces on one subnet (frames relayed by us)."""
    ns_a, ns_b = NetNamespace.create(unique_name()), NetNamespace.create(unique_name())
    devs = []
    try:
        a = (
            DeviceBuilder()
            .name("tapa")
            .layer(Layer.L2)
            .offload(True)
            .ipv4("198.18.55.1", 24)
            .netns(ns_a.name)
            .build_sync()
        )
        devs.append(a)
        b = (
            DeviceBuilder()
            .name("tapb")
            .layer(Layer.L2)
            .offload(True)
            .ipv4("198.18.55.2", 24)
            .netns(ns_b.name)
            .build_sync()
        )
        devs.append(b)
        yield Pair(ns_a, ns_b, a, b, "198.18.55.1", "198.18.55.2", socket.AF_INET)
    finally:
        for d in devs:
            d.close()
        ns_a.delete()
        ns_b.delete()


@pytest.mark.parametrize("mode", ["passthrough", "batch"])
def test_tap_offload_carries_ethernet_super_frames(tap_pair: Pair, mode: str) -> None:
    """TAP + offload: frames carry the header in front of Ethernet; split/coalesce keep the link header."""
    data = os.urandom(2 << 20)
    with Relay(tap_pair.dev_a, tap_pair.dev_b, mode=mode, workers="threads") as relay:
        got = tcp_transfer(tap_pair, data)
    assert got == data
    stats = relay.stats[Direction.A_TO_B]
    assert not stats.errors
    assert stats.super_frames_in > 0, "no Ethernet super-frame crossed"


@pytest.mark.parametrize("mode", ["passthrough", "batch"])
def test_thread_relay_stops_while_traffic_still_flows(pair: Pair, mode: str) -> None:
    """stop() ends the workers even when their queue never runs dry (they must not outlive the fds)."""
    flooding = threading.Event()
    flooding.set()

    def flood() -> None:
        with pair.ns_a.socket(pair.family, socket.SOCK_DGRAM) as s:
            payload = bytes(1200)
            while flooding.is_set():
                try:
                    s.sendto(payload, (pair.addr_b, 9))
                except OSError:
                    pass

    name = unique_name()
    relay = Relay(pair.dev_a, pair.dev_b, mode=mode, workers="threads", name=name).start()
    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        for _ in range(500):
            if relay.snapshot()[Direction.A_TO_B].frames_in >= 1000:
                break
            time.sleep(0.01)
        assert relay.snapshot()[Direction.A_TO_B].frames_in >= 1000, "the flood never reached the relay"
        relay.stop(timeout=2.0)
        alive = [t.name for t in threading.enumerate() if t.name.startswith(f"{name}-")]
        assert not alive, f"relay workers kept running after stop(): {alive}"
        assert not relay.running
    finally:
        flooding.clear()
        sender.join(5)
        relay.stop()
