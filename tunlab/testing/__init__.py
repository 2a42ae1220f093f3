"""Test-facing helpers: assertions (here), traffic, capture and packet builders (submodules).

They work with or without pytest: on lab nodes, tun_device peers, captures and stream results.
Names load their module on first use, so the packet builders need nothing beyond the standard
library (the device tests on macOS and the BSDs run with no third-party package but pytest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
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
        expected_loss,
        expected_quantile,
    )

__getattr__, __dir__ = lazy(
    __name__,
    {
        "Counters": "tunlab.testing.assertions",
        "assert_coalesced": "tunlab.testing.assertions",
        "assert_counter_delta": "tunlab.testing.assertions",
        "assert_delivered_exactly": "tunlab.testing.assertions",
        "assert_gso_seen": "tunlab.testing.assertions",
        "assert_loss_at_most": "tunlab.testing.assertions",
        "assert_reachable": "tunlab.testing.assertions",
        "assert_segmented": "tunlab.testing.assertions",
        "assert_throughput": "tunlab.testing.assertions",
        "assert_unreachable": "tunlab.testing.assertions",
        "counters": "tunlab.testing.assertions",
        "assert_delay": "tunlab.testing.impairment",
        "assert_loss_rate": "tunlab.testing.impairment",
        "assert_reordered": "tunlab.testing.impairment",
        "assert_rtt": "tunlab.testing.impairment",
        "assert_shaped": "tunlab.testing.impairment",
        "binomial_interval": "tunlab.testing.impairment",
        "expected_loss": "tunlab.testing.impairment",
        "expected_quantile": "tunlab.testing.impairment",
    },
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
    "expected_loss",
    "expected_quantile",
]
