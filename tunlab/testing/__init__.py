"""Test-facing helpers: assertions (here), traffic, capture and packet builders (submodules).

They work with or without pytest: on lab nodes, tun_device peers, captures and stream results.
Names load their module on first use, so the packet builders need nothing beyond the standard
library (the device tests on macOS and the BSDs run with no third-party package but pytest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.testing._assertions import (
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
    from tunlab.testing._capture import Capture, CapturedPacket, capture
    from tunlab.testing._impairment import (
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
        "Capture": "tunlab.testing._capture",
        "CapturedPacket": "tunlab.testing._capture",
        "capture": "tunlab.testing._capture",
        "Counters": "tunlab.testing._assertions",
        "assert_coalesced": "tunlab.testing._assertions",
        "assert_counter_delta": "tunlab.testing._assertions",
        "assert_delivered_exactly": "tunlab.testing._assertions",
        "assert_gso_seen": "tunlab.testing._assertions",
        "assert_loss_at_most": "tunlab.testing._assertions",
        "assert_reachable": "tunlab.testing._assertions",
        "assert_segmented": "tunlab.testing._assertions",
        "assert_throughput": "tunlab.testing._assertions",
        "assert_unreachable": "tunlab.testing._assertions",
        "counters": "tunlab.testing._assertions",
        "assert_delay": "tunlab.testing._impairment",
        "assert_loss_rate": "tunlab.testing._impairment",
        "assert_reordered": "tunlab.testing._impairment",
        "assert_rtt": "tunlab.testing._impairment",
        "assert_shaped": "tunlab.testing._impairment",
        "binomial_interval": "tunlab.testing._impairment",
        "expected_loss": "tunlab.testing._impairment",
        "expected_quantile": "tunlab.testing._impairment",
    },
)

__all__ = [
    "Capture",
    "CapturedPacket",
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
    "capture",
    "counters",
    "expected_loss",
    "expected_quantile",
]
