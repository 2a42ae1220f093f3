"""An offload matrix: the same TCP stream through a tun-pair under five offload settings.

For each combination (all on, gro off, gso+tso off, tso+tx-checksum off, all off) applied to the
veth link before the tun-pair, the stream must arrive byte-exact, and super-packets must cross
the tun-pair exactly when the sender segments lazily (TSO/GSO with checksum offload) or the
router's GRO merges the segments again.
"""

from __future__ import annotations

import pytest

from tunlab import traffic
from tunlab.testing import assert_delivered_exactly, assert_gso_seen

pytestmark = pytest.mark.topology("demo.yaml")


def test_tcp_through_a_tun_pair(topology, offload_matrix, capture) -> None:
    offload_matrix.apply(topology, "h1:eth0", "r1:eth0")
    with capture(topology, "r1", "tun0") as cap:
        result = traffic.tcp_stream(topology.node("h1"), topology.node("h2"), "198.18.2.2", nbytes=8 << 20)
    assert_delivered_exactly(result)

    f = offload_matrix.features
    sender_makes_super_packets = f["tso"] and f["gso"] and f["tx-checksum"]
    if sender_makes_super_packets or f["gro"]:
        assert_gso_seen(cap, gso_type="tcpv4", min_count=10, outgoing=True)
    else:
        assert not cap.gso_packets(), f"{len(cap.gso_packets())} super-packets with every offload off"
