"""Test-facing helpers: assertions (here), traffic, capture and packet builders (submodules).

They work with or without pytest: on lab nodes, tun_device peers, captures and stream results.
"""

from tunlab.testing.assertions import (
    Counters,
    assert_coalesced,
    assert_counter_delta,
    assert_delivered_exactly,
    assert_gso_seen,
    assert_loss_at_most,
    assert_reachable,
    assert_segmented,
    assert_throughput,
    assert_unreachable,
    counters,
)
from tunlab.testing.impairment import (
    assert_delay,
    assert_loss_rate,
    assert_reordered,
    assert_rtt,
    assert_shaped,
    binomial_interval,
    expected_quantile,
)

__all__ = [
    "Counters",
    "assert_coalesced",
    "assert_counter_delta",
    "assert_delay",
    "assert_delivered_exactly",
    "assert_gso_seen",
    "assert_loss_at_most",
    "assert_loss_rate",
    "assert_reachable",
    "assert_reordered",
    "assert_rtt",
    "assert_segmented",
    "assert_shaped",
    "assert_throughput",
    "assert_unreachable",
    "binomial_interval",
    "counters",
    "expected_quantile",
]
