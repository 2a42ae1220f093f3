"""A VPN-style test under a bad WAN: 100 ms RTT and 1 % loss between two sites.

The tunnel between the gateways is impaired (examples/wan-vpn.yaml); the tests check what a
VPN author would: the RTT the sites see, that TCP still delivers every byte, and that the loss
the tunnel adds is what was configured — then tighten the network at run time.
"""

from __future__ import annotations

import pytest

from tunlab import traffic
from tunlab.testing import assert_delivered_exactly, assert_loss_rate, assert_rtt

SITE_B = "198.18.102.2"


@pytest.mark.topology("wan-vpn.yaml")
def test_sites_see_a_100ms_rtt_and_tcp_survives_the_loss(topology) -> None:
    a, b = topology.node("site-a"), topology.node("site-b")
    # 1 % loss each way: a few of 10 pings may be lost; the ones that come back take 100 ms
    assert_rtt(traffic.ping(a, SITE_B, count=10, interval=0.05), 100.0, rel=0.05)
    assert_delivered_exactly(traffic.tcp_stream(a, b, SITE_B, nbytes=2 << 20))


@pytest.mark.topology("wan-vpn.yaml")
def test_the_tunnel_loses_what_was_configured(topology) -> None:
    res = traffic.one_way(topology.node("site-a"), topology.node("site-b"), SITE_B, count=5000, rate_pps=2000)
    assert_loss_rate(res.lost, res.sent, 1.0)


@pytest.mark.topology("wan-vpn.yaml")
def test_a_worse_network_at_run_time(topology, impair) -> None:
    impair(topology, "tunnel", delay="100ms", loss="5%", seed=1)  # put back after the test
    a = topology.node("site-a")
    assert_rtt(traffic.ping(a, SITE_B, count=8, interval=0.05), 200.0, rel=0.05)
