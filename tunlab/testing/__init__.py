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

__all__ = [
    "Counters",
    "assert_coalesced",
    "assert_counter_delta",
    "assert_delivered_exactly",
    "assert_gso_seen",
    "assert_loss_at_most",
    "assert_reachable",
    "assert_segmented",
    "assert_throughput",
    "assert_unreachable",
    "counters",
]
