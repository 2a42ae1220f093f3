"""Traffic helpers and captures on a real lab (the plugin's topology fixture)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import fd_snapshot, leaked_fds
from tunlab import traffic
from tunlab.testing import (
    assert_counter_delta,
    assert_delivered_exactly,
    assert_gso_seen,
    assert_loss_at_most,
    counters,
)
from tunlab.testing._capture import Capture

pytestmark = [pytest.mark.root, pytest.mark.topology("../../examples/demo.yaml")]


def test_tcp_stream_by_size_and_by_time(topology) -> None:
    h1, h2 = topology.node("h1"), topology.node("h2")
    sized = traffic.tcp_stream(h1, h2, "198.18.2.2", nbytes=3_000_001)
    assert sized.sent_bytes == sized.received_bytes == 3_000_001
    assert_delivered_exactly(sized)
    timed = traffic.tcp_stream(h2, h1, "198.18.1.2", duration=0.5)
    assert timed.exact and timed.gbps > 0
    v6 = traffic.tcp_stream(h1, h2, "2001:db8:2::2", nbytes=1 << 20)
    assert_delivered_exactly(v6)


def test_udp_stream_counts_loss_and_order(topology) -> None:
    res = traffic.udp_stream(
        topology.node("h1"), topology.node("h2"), "198.18.2.2", count=500, size=1200, rate_pps=20000
    )
    assert_delivered_exactly(res)
    assert_loss_at_most(res, 0.0)
    assert res.reordered == 0


def test_request_response_latency(topology) -> None:
    lat = traffic.request_response(topology.node("h1"), topology.node("h2"), "198.18.2.2", count=200)
    assert len(lat.samples_us) == 200
    assert 0 < lat.p50 <= lat.p99


def test_counters_move_with_traffic(topology) -> None:
    before = counters(topology.node("h1"), "eth0")
    ping = traffic.ping(topology.node("h1"), "198.18.1.1", count=5, interval=0.05)
    after = counters(topology.node("h1"), "eth0")
    assert ping.received == 5
    assert_counter_delta(before, after, "tx_packets", 5, tolerance=5)  # + ARP, ND, MLD at random times


def test_capture_writes_a_pcap_tcpdump_reads(topology, capture, tmp_path) -> None:
    pcap = tmp_path / "tun0.pcap"
    with capture(topology, "r1", "tun0", path=pcap) as cap:
        traffic.tcp_stream(topology.node("h1"), topology.node("h2"), "198.18.2.2", nbytes=4 << 20)
    assert_gso_seen(cap, gso_type="tcpv4", min_count=5, outgoing=True)
    assert cap.tcp_payload_sizes(outgoing=True)
    assert pcap.stat().st_size > 1000
    if shutil.which("tcpdump"):
        out = subprocess.run(
            ["tcpdump", "-nr", str(pcap), "-c", "5"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert "198.18." in out.stdout


def test_iperf3_adapter(topology) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    report = traffic.iperf3(topology.node("h1"), topology.node("h2"), "198.18.2.2", seconds=1)
    assert report["end"]["sum_received"]["bytes"] > 0


def test_capture_that_cannot_write_its_pcap_leaves_no_socket_open(topology, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ns = topology.node("r1").netns
    _, before = fd_snapshot()
    cap = Capture(ns, "tun0", blocker / "out.pcap")  # kept: it must not hold the socket either
    with pytest.raises(OSError):
        cap.start()  # a file cannot hold a directory
    assert not leaked_fds(before)
