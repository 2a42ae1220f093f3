"""The relay on real TUN devices: the compiled and the Python pump, multi-queue relays."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support import unique_name
from tunlab import DeviceBuilder, SyncDevice, traffic
from tunlab._linux.netns import NetNamespace
from tunlab.devices import offload
from tunlab.relay import Relay
from tunlab.relay._direction import Direction

pytestmark = pytest.mark.root


@pytest.fixture
def mq_pair(needs_root) -> Iterator[tuple[NetNamespace, NetNamespace, SyncDevice, SyncDevice]]:
    """Two multi-queue TUN devices (offload on) in two namespaces, routed towards each other."""
    a, b = NetNamespace.create(unique_name()), NetNamespace.create(unique_name())
    devs: list[SyncDevice] = []
    try:
        for name, ns, net, peer in (
            ("tuna", a, "198.18.60", "198.18.61"),
            ("tunb", b, "198.18.61", "198.18.60"),
        ):
            dev = (
                DeviceBuilder()
                .name(name)
                .offload(True)
                .multi_queue(True)
                .ipv4(f"{net}.1", 24)
                .netns(ns)
                .build_sync()
            )
            devs.append(dev)
            with ns.iproute() as ipr:
                ipr.route("add", dst=f"{peer}.0/24", oif=dev.if_index)
        yield a, b, devs[0], devs[1]
    finally:
        for d in devs:
            d.close()
        a.delete()
        b.delete()


def _flows(a: NetNamespace, b: NetNamespace, n: int) -> None:
    """n TCP streams (different ports: the kernel spreads flows over queues), each byte-exact."""
    for i in range(n):
        res = traffic.tcp_stream(
            traffic.place(a), traffic.place(b), "198.18.61.1", nbytes=2 << 20, port=5300 + i
        )
        assert res.exact, f"stream {i} arrived damaged"


@pytest.mark.parametrize("workers", ["threads", "processes"])
@pytest.mark.parametrize("impl", ["python", "compiled"])
def test_a_two_queue_relay_uses_both_queues(mq_pair, workers: str, impl: str) -> None:
    if impl not in offload.available():
        pytest.skip("the compiled core is not built here")
    a, b, dev_a, dev_b = mq_pair
    with offload.using(impl), Relay(dev_a, dev_b, queues=2, workers=workers) as relay:
        _flows(a, b, 8)
        parts = relay._stats[Direction.A_TO_B]
        assert len(parts) == 2
        stats = relay.stats[Direction.A_TO_B]
        assert stats.frames_in == sum(p.frames_in for p in parts) > 0
        assert stats.frames_out == stats.frames_in - stats.dropped
        assert sum(1 for p in parts if p.frames_in) == 2, "8 flows all landed on one queue"
        assert not stats.errors


def test_queues_need_multi_queue_devices(needs_root) -> None:
    ns = NetNamespace.create(unique_name())
    try:
        with DeviceBuilder().netns(ns).build_sync() as x, DeviceBuilder().netns(ns).build_sync() as y:
            with pytest.raises(ValueError, match=r"multi_queue\(True\)"):
                Relay(x, y, queues=2)
    finally:
        ns.delete()


def test_the_compiled_pump_stops_under_a_flood(mq_pair) -> None:
    """A busy source never hides stop(): the C loop looks at the stop event every 64 frames."""
    if "compiled" not in offload.available():
        pytest.skip("the compiled core is not built here")
    a, b, dev_a, dev_b = mq_pair
    relay = Relay(dev_a, dev_b).start()
    sender = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooding = threading.Event()
    flooding.set()

    def flood() -> None:
        while flooding.is_set():
            for _ in range(100):
                sender.sendto(b"x" * 1000, ("198.18.61.1", 9))

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while relay.stats[Direction.A_TO_B].frames_in < 5000:
            assert time.monotonic() < deadline, "the flood never reached the relay"
            time.sleep(0.01)
        relay.stop(timeout=2.0)  # while the flood goes on
        assert not relay.running
    finally:
        flooding.clear()
        t.join(5)
        sender.close()
        relay.stop()


def test_a_queue_cloned_from_a_received_fd_keeps_the_offload_mask(mq_pair) -> None:
    """The offload mask belongs to the interface: cloning a queue of a device received by fd
    (whose mask this process cannot read) must not clear it (it did: TSO went off)."""
    import os

    from tunlab._linux import ethtool

    a, _b, dev_a, _dev_b = mq_pair
    assert ethtool.read_features(a, "tuna")["tso"]
    received = SyncDevice.from_fd(os.dup(dev_a.fileno()))
    clone = received.try_clone()
    try:
        assert clone.tcp_gso and clone.backend.frame_format.virtio
        assert ethtool.read_features(a, "tuna")["tso"], "try_clone switched TSO off"
    finally:
        clone.close()
        received.close()
