"""Randomness for impairments: seeded streams, netem's correlated generator, delay tables.

Everything is drawn from the seed — including what the kernel takes from its unseeded RNG
(the correlators' start values, the corrupted bit) — so a seed replays a run exactly.
compat "netem" uses one stream consumed in netem's order, with netem's correlation formula
(an AR(1) smoothing of the uniform variate, which also lowers event rates); compat "ideal"
gives each feature its own stream (changing one feature never moves another's draws) and
correlations with the exact marginal: a two-state Markov chain for events, an AR(1) Gaussian
score mapped through the distribution for delays.
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Sequence

U32 = 2**32
DIST_SCALE = 8192  # a table entry of 8192 is one standard deviation


FEATURES = ("duplicate", "loss", "corrupt", "reorder", "delay", "slot", "state")


def streams(seed: int | None, ideal: bool, tag: str = "") -> dict[str, random.Random]:
    """One Random per feature (ideal) or one shared by all (netem), from the seed.

    `tag` separates another set of ideal streams (the duplicates' pass) from the originals'.
    """
    base = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
    if not ideal:
        shared = random.Random(base)  # noqa: S311 - seeded simulation, not secrets
        return dict.fromkeys(FEATURES, shared)
    return {f: random.Random(f"{base}:{tag}:{f}") for f in FEATURES}  # noqa: S311 - as above


def u32_prob(percent: float) -> int:
    """iproute2's conversion of a percentage to netem's u32 probability."""
    return round(percent / 100 * (U32 - 1))


class Correlated:
    """An event with probability p and correlation c, drawn netem's way or the ideal way."""

    def __init__(self, percent: float, correlation: float, rng: random.Random, ideal: bool) -> None:
        self.prob = u32_prob(percent)
        self.p = percent / 100
        self.c = correlation / 100
        self.rho = u32_prob(correlation)
        self.rng = rng
        self.ideal = ideal
        self.last = rng.getrandbits(32)  # netem: the correlator's start value (seeded here)
        self.previous = False  # ideal: the previous event

    def uniform(self) -> int:
        """netem's get_crandom: a u32, AR(1)-smoothed when rho > 0."""
        u = self.rng.getrandbits(32)
        if self.rho == 0:
            return u
        r = self.rho + 1
        ans = (u * (U32 - r) + self.last * r) >> 32
        self.last = ans
        return ans

    def fires(self) -> bool:
        """loss/duplicate/corrupt: `prob != 0 and prob >= x`; ideal: marginal p, lag-1 correlation c."""
        if self.prob == 0:
            return False
        if self.ideal and self.c:
            q = self.p + self.c * (1 - self.p) if self.previous else self.p * (1 - self.c)
            self.previous = self.rng.random() < q
            return self.previous
        return self.prob >= self.uniform()


def _cdiv(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class DelaySampler:
    """netem's tabledist(): delay (ns) with jitter, correlation and a distribution table."""

    def __init__(
        self,
        mu: int,
        sigma: int,
        correlation: float,
        table: Sequence[int] | None,
        rng: random.Random,
        ideal: bool,
    ) -> None:
        self.mu, self.sigma, self.table = mu, abs(sigma), table
        self.ideal = ideal and correlation > 0
        self.c = correlation / 100
        self.rng = rng
        self.z = rng.gauss(0.0, 1.0) if self.ideal else 0.0
        self.crand = Correlated(0, correlation, rng, ideal=False)

    def _ideal_u32(self) -> int:
        self.z = self.c * self.z + math.sqrt(1 - self.c**2) * self.rng.gauss(0.0, 1.0)
        phi = 0.5 * (1 + math.erf(self.z / math.sqrt(2)))
        return min(U32 - 1, int(phi * U32))

    def sample(self) -> int:
        if self.sigma == 0:
            return self.mu
        if self.ideal:
            # scale (not reduce modulo, as the kernel does) so neighbouring draws stay close
            x = self._ideal_u32()
            if self.table is None:
                return self.mu - self.sigma + (x * 2 * self.sigma >> 32)
            return tabledist(self.mu, self.sigma, x * len(self.table) >> 32, self.table)
        return tabledist(self.mu, self.sigma, self.crand.uniform(), self.table)


def tabledist(mu: int, sigma: int, x: int, table: Sequence[int] | None) -> int:
    """netem's mapping of a u32 draw x to a delay: uniform in [mu - sigma, mu + sigma), or
    mu + sigma * table[x mod n] / 8192 in the kernel's integer arithmetic."""
    if sigma == 0:
        return mu
    if table is None:
        return mu - sigma + (x % (2 * sigma))
    t = table[x % len(table)]
    v = (sigma % DIST_SCALE) * t
    v = v + DIST_SCALE // 2 if v >= 0 else v - DIST_SCALE // 2
    return _cdiv(v, DIST_SCALE) + (sigma // DIST_SCALE) * t + mu


# ---- the distribution tables (NIST Net's generators, as tc's maketable builds them) -------------
def _normal_inverse() -> list[float]:
    """inv[i] = the x where 16384 * Phi(x) rounds (half even) to i; later x overwrite."""
    size = 16384
    inv = [0.0] * (size + 1)
    x = -10.0
    step = 0.00005
    erf, root2 = math.erf, math.sqrt(2.0)
    while x < 10.05:
        inv[round(size * (0.5 + 0.5 * erf(x / root2)))] = x
        x += step
    return inv


def _clip16(v: int) -> int:
    return max(-32768, min(32767, v))


def _pareto_value(i: int) -> int:
    d = (i / 65536) ** (-1 / 3) - 1.5
    d *= (4 / 3) * DIST_SCALE
    out: int = round(min(d, 32767.0))
    return out


@functools.cache
def table(name: str) -> tuple[int, ...]:
    """normal, pareto or paretonormal: 4096 signed entries, 8192 = one standard deviation."""
    if name == "normal":
        inv = _normal_inverse()
        return tuple(_clip16(round(inv[i] * DIST_SCALE)) for i in range(0, 16384, 4))
    if name == "pareto":
        return tuple(_pareto_value(i) for i in range(65536, 0, -16))
    if name == "paretonormal":
        inv = _normal_inverse()
        out = []
        for i in range(0, 16384, 4):
            normal = round(inv[i] * DIST_SCALE)
            pareto = _pareto_value(65536 - 4 * i)
            out.append(_clip16(_cdiv(normal + 3 * pareto, 4)))
        return tuple(out)
    raise ValueError(f"unknown distribution {name!r}")
