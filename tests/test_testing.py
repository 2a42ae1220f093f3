"""tunlab.testing assertions: each passes on the right input and says precisely what is wrong."""

from __future__ import annotations

import pytest

from tests.offload.helpers import tcp_flow
from tunlab.devices.offload import coalesce
from tunlab.testing import (
    Counters,
    assert_coalesced,
    assert_counter_delta,
    assert_delivered_exactly,
    assert_gso_seen,
    assert_loss_at_most,
    assert_segmented,
    assert_throughput,
)
from tunlab.testing._capture import CapturedPacket
from tunlab.testing._traffic import PingResult, StreamResult


def test_delivered_exactly() -> None:
    assert_delivered_exactly(StreamResult("tcp", 100, 100, 1.0, True))
    with pytest.raises(AssertionError, match=r"TCP delivered 90 of 100 bytes \(10 missing\)"):
        assert_delivered_exactly(StreamResult("tcp", 100, 90, 1.0, False))
    with pytest.raises(AssertionError, match="differ from what was sent"):
        assert_delivered_exactly(StreamResult("tcp", 100, 100, 1.0, False))
    with pytest.raises(AssertionError, match="UDP delivered 9 of 10 datagrams"):
        assert_delivered_exactly(StreamResult("udp", 100, 90, 1.0, True, 10, 9))


def test_loss_and_throughput() -> None:
    assert_loss_at_most(PingResult("x", 10, 9), 0.1)
    with pytest.raises(AssertionError, match="loss 20.00% is above the allowed 10.00%"):
        assert_loss_at_most(PingResult("x", 10, 8), 0.1)
    r = StreamResult("tcp", 10**9, 10**9, 1.0, True)  # 8 Gbit/s
    assert_throughput(r, min_gbps=7.9, baseline_gbps=8.2, tolerance_pct=5)
    with pytest.raises(AssertionError, match="below 9.000 Gbit/s"):
        assert_throughput(r, min_gbps=9)
    with pytest.raises(AssertionError, match=r"-20.0% from the baseline 10.000 Gbit/s \(allowed ±10%\)"):
        assert_throughput(r, baseline_gbps=10, tolerance_pct=10)
    with pytest.raises(ValueError, match="tolerance_pct"):
        assert_throughput(r, baseline_gbps=10)


def test_segmented_and_coalesced() -> None:
    assert_segmented([1448, 1448, 100], total=2996, mss=1448)
    with pytest.raises(AssertionError, match="should leave as 2 x 1448 \\+ 100; got 2 segments"):
        assert_segmented([1448, 1548], total=2996, mss=1448)
    assert assert_coalesced([20000], expected=[20000], segments=20, min_ratio=20) == 20
    with pytest.raises(AssertionError, match="coalescing ratio 5.00 \\(20 segments in 4 packets\\)"):
        assert_coalesced([5000] * 4, segments=20, min_ratio=10)
    with pytest.raises(AssertionError, match="differ from the expected"):
        assert_coalesced([1, 2], expected=[2, 1])


def test_gso_seen_in_frames_and_captures() -> None:
    frames = coalesce(tcp_flow(5, 1000))
    assert assert_gso_seen(frames, gso_type="tcpv4", gso_size=1000) == 1
    with pytest.raises(AssertionError, match="with gso_size 1448 .* gso_size values seen: \\[1000\\]"):
        assert_gso_seen(frames, gso_size=1448)
    packets = [CapturedPacket(0.0, True, b"x" * 100, 0, 0, False)] * 3
    with pytest.raises(AssertionError, match="0 GSO super-packets among 3 packets"):
        assert_gso_seen(packets)
    with pytest.raises(ValueError, match="gso_type"):
        assert_gso_seen(frames, gso_type="sctp")


def test_counter_delta() -> None:
    before = Counters(*([10] * 8))
    after = Counters(20, 30, 10, 10, 10, 10, 10, 10)
    assert assert_counter_delta(before, after, "rx_packets", 10) == 10
    assert_counter_delta(before, after, "tx_packets", 19, tolerance=1)
    assert_counter_delta(before, after, "tx_packets", 21, tolerance=0.1)
    with pytest.raises(AssertionError, match="tx_packets changed by 20, expected 10 ± 2"):
        assert_counter_delta(before, after, "tx_packets", 10, tolerance=2)
    with pytest.raises(ValueError, match="field"):
        assert_counter_delta(before, after, "packets", 1)


def test_captured_ethernet_frames_give_their_ip_packet_past_vlan_tags() -> None:
    ip = bytes.fromhex("4500001c0000400040110000c6120001c6120002") + bytes(8)
    plain = bytes(12) + b"\x08\x00" + ip
    tagged = bytes(12) + b"\x81\x00\x00\x05" + b"\x08\x00" + ip
    for frame in (plain, tagged):
        assert CapturedPacket(0.0, False, frame, 0, 0, True).ip == ip
    assert CapturedPacket(0.0, False, b"\x00" * 10, 0, 0, True).ip == b""


def test_assert_rtt_takes_the_median_and_never_a_shorter_rtt() -> None:
    from tunlab.testing import assert_rtt

    def result(*rtts: float) -> PingResult:
        return PingResult("198.18.0.2", len(rtts), len(rtts), list(rtts))

    assert_rtt(result(140, 101, 100.5, 128, 101, 102), 100.0)  # late samples from a busy machine
    with pytest.raises(AssertionError, match=r"below 95.00 ms .*a delay never shortens\): 90 ms"):
        assert_rtt(result(101, 101, 90, 101), 100.0)
    with pytest.raises(AssertionError, match="median 120 ms is outside 95.00..105.00"):
        assert_rtt(result(101, 120, 120, 125), 100.0)
    with pytest.raises(AssertionError, match="no ping to 198.18.0.2 was answered"):
        assert_rtt(PingResult("198.18.0.2", 3, 0, []), 100.0)
    assert_rtt(result(50, 101), 100.0)  # the first (neighbour resolution) is left out
