"""Assertions for impaired links: delay distributions, loss within a binomial interval,
reordering, shaped throughput — each failure says what was measured and what was allowed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tunlab.relay.impair import _rand as rand
from tunlab.relay.impair._model import Netem
from tunlab.testing._traffic import OneWayResult, PingResult, StreamResult

__all__ = [
    "assert_delay",
    "assert_loss_rate",
    "assert_reordered",
    "assert_rtt",
    "assert_shaped",
    "binomial_interval",
    "expected_loss",
    "expected_quantile",
]

Z = {0.99: 2.576, 0.999: 3.291, 0.9999: 3.891}


def _netem(value: Netem | Mapping[str, Any]) -> Netem:
    return value if isinstance(value, Netem) else Netem.model_validate(dict(value))


def binomial_interval(n: int, percent: float, confidence: float = 0.999) -> tuple[int, int]:
    """The (low, high) count of events of probability percent/100 in n trials, at confidence
    (two-sided normal approximation widened by z²/2, which keeps it sound for small p)."""
    z = Z.get(confidence)
    if z is None:
        raise ValueError(f"confidence: one of {sorted(Z)}, got {confidence!r}")
    p = percent / 100
    if n <= 0:
        return (0, 0)
    # the interval of counts k whose Wilson interval contains p
    centre = n * p
    spread = z * math.sqrt(n * p * (1 - p)) + z * z / 2
    return (max(0, math.floor(centre - spread)), min(n, math.ceil(centre + spread)))


def assert_loss_rate(lost: int, total: int, percent: float, *, confidence: float = 0.999) -> None:
    """lost of total is what a random loss of `percent` % gives, within the binomial interval.

    Example:
        ```python
        lab.link("h2:tun0").impair(loss="10%")
        res = traffic.one_way(lab.node("h1"), lab.node("h2"), "198.18.2.2", count=1000)
        assert_loss_rate(res.lost, res.sent, 10.0)
        ```
    """
    low, high = binomial_interval(total, percent, confidence)
    if not low <= lost <= high:
        raise AssertionError(
            f"lost {lost} of {total} ({lost / max(total, 1):.3%}); a {percent:g}% loss loses "
            f"{low}..{high} at {confidence:.1%} confidence"
        )


def expected_loss(netem: Netem | Mapping[str, Any]) -> float:
    """The long-run loss an impairment causes, in percent: `loss`, or the stationary loss of its
    Gilbert-Elliott or 4-state model (what assert_loss_rate should be given for a loss model)."""
    n = _netem(netem)
    model = n.loss_model
    if model is None:
        return n.loss
    chosen = model.gemodel if model.gemodel is not None else model.state
    assert chosen is not None
    return 100 * chosen.stationary_loss()


def expected_quantile(netem: Netem | Mapping[str, Any], q: float) -> float:
    """The q-quantile (0..1) of the configured one-way delay in ms (jitter and its table)."""
    n = _netem(netem)
    if not n.jitter:
        return n.delay
    if n.distribution == "uniform":
        return n.delay - n.jitter + 2 * n.jitter * q
    table = sorted(rand.table(n.distribution) if isinstance(n.distribution, str) else n.distribution)
    t = table[min(len(table) - 1, int(q * len(table)))]
    return n.delay + n.jitter * t / rand.DIST_SCALE


def _quantile(data: Sequence[float], q: float) -> float:
    s = sorted(data)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def assert_delay(
    result: OneWayResult,
    netem: Netem | Mapping[str, Any],
    *,
    baseline_ms: float = 0.0,
    tolerance_ms: float | None = None,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
) -> None:
    """The measured one-way delays follow the configured distribution: each quantile within
    tolerance_ms (default 0.5 ms + 2 % of the delay) of the configured one plus baseline_ms (the
    path's own delay, measured unimpaired)."""
    if not result.delays_ms:
        raise AssertionError(f"no probe arrived ({result.sent} sent): cannot judge the delay")
    n = _netem(netem)
    tol = tolerance_ms if tolerance_ms is not None else 0.5 + 0.02 * (n.delay + n.jitter)
    rows, bad = [], False
    for q in quantiles:
        want = expected_quantile(n, q) + baseline_ms
        got = _quantile(result.delays_ms, q)
        ok = abs(got - want) <= tol
        bad |= not ok
        rows.append(
            f"p{q * 100:g}: measured {got:.3f} ms, configured {want:.3f} ms{'' if ok else '  <-- off'}"
        )
    if bad:
        raise AssertionError(
            f"one-way delay does not match {n.summary() or 'no impairment'} (allowed ±{tol:.3f} ms, "
            f"{len(result.delays_ms)} probes):\n  " + "\n  ".join(rows)
        )


def assert_rtt(result: PingResult, expected_ms: float, *, rel: float = 0.05, skip_first: bool = True) -> None:
    """The ping RTTs show expected_ms: none below expected_ms * (1 - rel) (a delay never
    shortens), and the median within ±rel. A busy machine adds to some samples — a worker
    scheduled late — but never takes away, so single samples above the band are allowed; the
    median is what the impairment sets. The first ping may carry neighbour resolution and is
    left out unless skip_first=False.

    Example:
        ```python
        lab.link("h2:tun0").impair(delay="50ms")  # each way
        assert_rtt(traffic.ping(lab.node("h1"), "198.18.2.2", count=5), 100.0)
        ```
    """
    rtts = result.rtt_ms[1:] if skip_first and len(result.rtt_ms) > 1 else result.rtt_ms
    if not rtts:
        raise AssertionError(f"no ping to {result.address} was answered ({result.sent} sent)")
    low, high = expected_ms * (1 - rel), expected_ms * (1 + rel)
    below = [r for r in rtts if r < low]
    if below:
        shown = ", ".join(f"{r:g}" for r in below[:10])
        raise AssertionError(
            f"RTT to {result.address}: {len(below)} of {len(rtts)} below {low:.2f} ms (expected "
            f"{expected_ms:g} ms ±{rel:.0%}; a delay never shortens): {shown} ms"
        )
    median = statistics.median(rtts)
    if not low <= median <= high:
        raise AssertionError(
            f"RTT to {result.address}: median {median:g} ms is outside {low:.2f}..{high:.2f} ms "
            f"(expected {expected_ms:g} ms ±{rel:.0%}; samples: {', '.join(f'{r:g}' for r in rtts[:20])} ms)"
        )


def assert_reordered(result: OneWayResult, *, at_least: int = 1, at_most: int | None = None) -> None:
    """Probes arrived out of order (at least / at most this many arrivals after a later one)."""
    got = result.reordered
    if got < at_least or (at_most is not None and got > at_most):
        want = f"at least {at_least}" + (f" and at most {at_most}" if at_most is not None else "")
        raise AssertionError(
            f"{got} of {len(result.arrivals)} probes arrived after a later-sent one; wanted {want}"
        )


def assert_shaped(measured_bps: float | StreamResult | Mapping[str, Any], rate: str | int, *,
                  low: float = 0.9, high: float = 1.0) -> None:  # fmt: skip
    """Throughput (bit/s, a stream result, or an iperf3 report) within low..high of a rate
    ("100mbit" or bit/s): shaping that works delivers close to the rate and never more."""
    from tunlab.relay.impair import _units as units

    target = units.rate_bps(rate)
    if isinstance(measured_bps, StreamResult):
        bps = measured_bps.gbps * 1e9
    elif isinstance(measured_bps, Mapping):
        bps = float(measured_bps["end"]["sum_received"]["bits_per_second"])
    else:
        bps = float(measured_bps)
    # the shaped rate counts link-layer bytes; payload throughput sits a little below it
    if not low * target <= bps <= high * target * 1.02:
        raise AssertionError(
            f"throughput {bps / 1e6:.2f} Mbit/s is outside {low:.0%}..{high:.0%} of the shaped "
            f"{target / 1e6:g} Mbit/s ({low * target / 1e6:.2f}..{high * target / 1e6:.2f} Mbit/s)"
        )
