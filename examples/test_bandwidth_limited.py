"""A bandwidth-limited link: TCP gets close to the shaped rate and never more."""

from __future__ import annotations

import shutil

import pytest

from tunlab import traffic
from tunlab.testing import assert_shaped


@pytest.mark.topology("bandwidth-limited.yaml")
def test_tcp_gets_90_to_100_percent_of_20_mbit(topology) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    report = traffic.iperf3(topology.node("client"), topology.node("server"), "198.18.110.2", seconds=3)
    assert_shaped(report, "20mbit", low=0.9)
    assert topology.link(0).stats()["via"] in ("kernel", "inserted")
