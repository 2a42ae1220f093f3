"""What an impairment is: netem's parameters (and tbf's), validated with tc's own rules.

Values are given as tc writes them (`"10ms"`, `"5%"`, `"100mbit"`, `"15k"`) or as numbers in
documented units — milliseconds, percent, bit/s, bytes — and are kept in those units, so a
model dumps and re-reads to itself. Semantics follow Linux netem (see docs/topologies.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tunlab.relay._direction import Direction
from tunlab.relay.impair import _units as units
from tunlab.relay.impair._params import GEParams, GIParams, NetemParams, ShaperParams, SlotParams
from tunlab.relay.impair._table import (
    FOUR_STATE,
    GEMODEL,
    MAX_RATE_BPS,
    MAX_TIME_MS,
    NETEM,
    SHAPER,
    SLOT,
    param,
    relay_values,
)

MAX_JITTER_NS = 2_147_483_647  # the kernel clamps jitter here; we refuse beyond


def _ms(value: Any) -> Any:
    if value is None:
        return None
    try:
        ms = units.time_ns(value) / 1e6
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None
    if ms > MAX_TIME_MS:
        raise ValueError(
            f"{value!r} is longer than a relay can hold a packet ({MAX_TIME_MS / 86400e3:.1f} days, "
            "poll's limit); use a shorter time"
        )
    return ms


def _pct(value: Any) -> Any:
    if value is None:
        return None
    try:
        return units.percent(value)
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None


def _bps(value: Any) -> Any:
    if value is None:
        return None
    try:
        bps = units.rate_bps(value)
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None
    if bps > MAX_RATE_BPS:
        raise ValueError(f"{value!r} is above {units.show_rate(MAX_RATE_BPS)}: no link paces that fast")
    return bps


def _bytes(value: Any) -> Any:
    if value is None:
        return None
    try:
        return units.size_bytes(value)
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None


Ms = Annotated[float, BeforeValidator(_ms)]  # milliseconds
Pct = Annotated[float, BeforeValidator(_pct)]  # percent 0..100
Correlation = Annotated[float, BeforeValidator(_pct)]
Bps = Annotated[int, BeforeValidator(_bps)]  # bit/s
Size = Annotated[int, BeforeValidator(_bytes)]  # bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GilbertElliott(_Strict):
    """`loss gemodel P [R [1-H [1-K]]]`: Good/Bad states, loss decided on the state before moving."""

    p: Pct = Field(description=param("loss_model.gemodel.p").description)
    r: Pct | None = param("loss_model.gemodel.r")
    one_minus_h: Pct = param("loss_model.gemodel.1-h")
    one_minus_k: Pct = param("loss_model.gemodel.1-k")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def r_value(self) -> float:
        """R as given, or 100% - P when left out (as tc does)."""
        return 100.0 - self.p if self.r is None else self.r

    def stationary_loss(self) -> float:
        """Expected loss fraction (0..1)."""
        p, r = self.p / 100, self.r_value / 100
        if p + r == 0:
            return self.one_minus_k / 100
        return (r * self.one_minus_k / 100 + p * self.one_minus_h / 100) / (p + r)


class FourState(_Strict):
    """`loss state P13 [P31 [P32 [P23 [P14]]]]`: the 4-state Markov model (fate = state entered)."""

    p13: Pct = Field(description=param("loss_model.state.p13").description)
    p31: Pct | None = param("loss_model.state.p31")
    p32: Pct = param("loss_model.state.p32")
    p23: Pct = param("loss_model.state.p23")
    p14: Pct = param("loss_model.state.p14")

    @property
    def p31_value(self) -> float:
        """P31 as given, or 100% - P13 when left out (as tc does)."""
        return 100.0 - self.p13 if self.p31 is None else self.p31

    @model_validator(mode="after")
    def _sums(self) -> FourState:
        if self.p13 + self.p14 > 100:
            raise ValueError(f"p13 + p14 = {self.p13 + self.p14}% is over 100% (they leave state 1)")
        if self.p31_value + self.p32 > 100:
            raise ValueError(f"p31 + p32 = {self.p31_value + self.p32}% is over 100% (they leave state 3)")
        return self

    def stationary_loss(self) -> float:
        """Expected loss fraction (0..1) of the 4-state model in its steady state."""
        p13, p31, p32 = self.p13 / 100, self.p31_value / 100, self.p32 / 100
        p23, p14 = self.p23 / 100, self.p14 / 100
        if p31 == 0:
            return 1.0 if p13 else p14 / (1 + p14)
        denominator = 1 + p14 + p13 / p31 + (p13 * p32 / (p23 * p31) if p23 else 0)
        return (p13 / p31 + p14) / denominator


class LossModel(_Strict):
    """One of the bursty loss models."""

    gemodel: GilbertElliott | None = None
    state: FourState | None = None

    @model_validator(mode="after")
    def _one(self) -> LossModel:
        if (self.gemodel is None) == (self.state is None):
            raise ValueError("give exactly one of gemodel or state")
        return self


class Slot(_Strict):
    """`slot MIN [MAX] [packets N] [bytes B]` or `slot distribution D DELAY JITTER`: bursty MACs."""

    min: Ms | None = param("slot.min")
    max: Ms | None = param("slot.max")
    distribution: Literal["uniform", "normal", "pareto", "paretonormal"] | None = param("slot.distribution")
    delay: Ms | None = param("slot.delay")
    jitter: Ms | None = param("slot.jitter")
    packets: int = param("slot.packets")
    bytes: Size = param("slot.bytes")

    @property
    def max_value(self) -> float:
        """max, or min when only min is given."""
        return self.max if self.max is not None else self.min or 0.0

    @model_validator(mode="after")
    def _form(self) -> Slot:
        if self.distribution is not None:
            if self.min is not None or self.max is not None:
                raise ValueError("give min/max, or distribution with delay and jitter, not both")
            if self.delay is None or not self.jitter:
                raise ValueError("slot distribution needs delay and a jitter > 0")
        else:
            if self.min is None:
                raise ValueError("a slot needs min (and optionally max), or distribution/delay/jitter")
            if self.max is not None and self.max < self.min:
                raise ValueError(f"slot max {self.max}ms is below min {self.min}ms")
        return self


class TokenBucket(_Strict):
    """tbf: rate, burst, limit (bytes) or latency, optional peakrate with mtu."""

    rate: Bps = Field(description=param("shaper.rate").description)
    burst: Size = Field(gt=0, le=2**32 - 1, description=param("shaper.burst").description)
    limit: Size | None = param("shaper.limit")
    latency: Ms | None = param("shaper.latency")
    peakrate: Bps | None = param("shaper.peakrate")
    mtu: Size | None = param("shaper.mtu")
    mpu: Size = param("shaper.mpu")
    overhead: int = param("shaper.overhead")
    linklayer: Literal["ethernet", "atm"] = param("shaper.linklayer")

    @model_validator(mode="after")
    def _rules(self) -> TokenBucket:
        if (self.limit is None) == (self.latency is None):
            raise ValueError("tbf needs exactly one of limit (bytes) or latency (time)")
        if self.peakrate is not None:
            if self.mtu is None:
                raise ValueError("peakrate needs mtu (the second bucket's depth, about the device MTU)")
            if self.peakrate <= self.rate:
                raise ValueError(f"peakrate {self.peakrate} bit/s must be above rate {self.rate} bit/s")
        return self

    def tc(self) -> str:
        """As a `tc qdisc ... tbf` argument string."""
        out = f"rate {units.show_rate(self.rate)} burst {self.burst} limit {self.limit_bytes}"
        if self.peakrate is not None:
            out += f" peakrate {units.show_rate(self.peakrate)} mtu {self.mtu}"
        if self.mpu:
            out += f" mpu {self.mpu}"
        if self.overhead:
            out += f" overhead {self.overhead}"
        if self.linklayer != "ethernet":
            out += f" linklayer {self.linklayer}"
        return out

    @property
    def atm(self) -> bool:
        """Rates count ATM cells (linklayer atm)."""
        return self.linklayer == "atm"

    @property
    def limit_bytes(self) -> int:
        """tc's rule: limit, or rate x latency + burst (and the peak bucket's bound)."""
        if self.limit is not None:
            return self.limit
        assert self.latency is not None
        limit = int(self.rate / 8 * self.latency / 1000) + self.burst
        if self.peakrate is not None and self.mtu is not None:
            limit = min(limit, int(self.peakrate / 8 * self.latency / 1000) + self.mtu)
        return limit


Distribution = Literal["uniform", "normal", "pareto", "paretonormal"] | list[int]


class Netem(_Strict):
    """One direction's impairment: netem's parameters, a token-bucket shaper, relay extensions."""

    delay: Ms = param("delay")
    jitter: Ms = param("jitter")
    delay_correlation: Correlation = param("delay_correlation")
    distribution: Distribution = param("distribution")
    loss: Pct = param("loss")
    loss_correlation: Correlation = param("loss_correlation")
    loss_model: LossModel | None = param("loss_model")
    ecn: bool = param("ecn")
    duplicate: Pct = param("duplicate")
    duplicate_correlation: Correlation = param("duplicate_correlation")
    corrupt: Pct = param("corrupt")
    corrupt_correlation: Correlation = param("corrupt_correlation")
    reorder: Pct = param("reorder")
    reorder_correlation: Correlation = param("reorder_correlation")
    gap: int = param("gap")
    rate: Bps | None = param("rate")
    bw: float | None = param("bw")
    packet_overhead: int = param("packet_overhead")
    cell_size: int = param("cell_size")
    cell_overhead: int = param("cell_overhead")
    slot: Slot | None = param("slot")
    limit: int = param("limit")
    seed: int | None = param("seed")
    shaper: TokenBucket | None = param("shaper")
    preserve_order: bool = param("preserve_order")
    compat: Literal["netem", "ideal"] = param("compat")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_queue_size" in data:  # mininet's name for limit
            data = dict(data)
            if "limit" in data:
                raise ValueError("give limit or max_queue_size, not both")
            data["limit"] = data.pop("max_queue_size")
        return data

    @model_validator(mode="after")
    def _rules(self) -> Netem:
        if self.jitter * 1e6 > MAX_JITTER_NS:
            raise ValueError(f"jitter {self.jitter}ms is over {MAX_JITTER_NS / 1e6:.0f}ms (netem's limit)")
        if self.distribution != "uniform" and not (self.delay > 0 and self.jitter > 0):
            raise ValueError("a delay distribution needs a delay and a jitter above 0 (as in tc)")
        if isinstance(self.distribution, list):
            if not 1 <= len(self.distribution) <= 16384:
                raise ValueError("a custom distribution table has 1..16384 entries")
            if any(not -32768 <= v <= 32767 for v in self.distribution):
                raise ValueError("a custom distribution table holds signed 16-bit values (8192 = 1 sigma)")
        if self.loss and self.loss_model is not None:
            raise ValueError("give loss (random) or loss_model, not both")
        if self.ecn and not (self.loss or self.loss_model):
            raise ValueError("ecn needs a loss setting: it marks CE instead of dropping")
        if self.reorder and not self.delay:
            raise ValueError("reordering is not possible without some delay (as in tc)")
        if self.gap and not self.reorder:
            raise ValueError("gap needs reorder")
        if self.rate is not None and self.bw is not None:
            raise ValueError("give rate or bw (Mbit/s), not both")
        if self.slot is not None and not self.delay and self.slot.distribution is None and not self.slot.min:
            raise ValueError("a slot needs a length (min > 0) or a distribution")
        return self

    # ---- effective values --------------------------------------------------------------------
    @property
    def rate_bps(self) -> int | None:
        """The rate in bit/s (from rate, or from bw in Mbit/s), or None."""
        if self.bw is not None:
            return int(self.bw * 1e6)
        return self.rate

    @property
    def gap_value(self) -> int:
        """netem's gap: as given, or 1 when reorder is set without one."""
        return self.gap or (1 if self.reorder else 0)

    @property
    def active(self) -> bool:
        """Anything to do (a default Netem passes everything straight through)."""
        return self != Netem(seed=self.seed, compat=self.compat)

    def warnings(self) -> list[str]:
        """What is legal but probably not what was meant (printed by validate and up)."""
        out = []
        for name in ("loss", "duplicate", "corrupt", "reorder"):
            p, c = getattr(self, name), getattr(self, f"{name}_correlation")
            if p and c and self.compat == "netem":
                out.append(
                    f"{name} {p:g}% with correlation {c:g}%: netem's correlation also lowers the rate "
                    "(far fewer packets than the configured percentage are hit); "
                    "use loss_model or compat: ideal"
                )
        if self.limit == 0:
            out.append("limit 0 drops every packet")
        return out

    @property
    def ideal(self) -> bool:
        """compat: ideal (independent random streams, no netem quirks)."""
        return self.compat == "ideal"

    def params(self) -> NetemParams:
        """The engine's plain numbers (ns, bit/s, bytes) for this impairment (the table's relay
        column, nested models included)."""
        lm, sl, sh = self.loss_model, self.slot, self.shaper
        ge = lm.gemodel if lm is not None else None
        gi = lm.state if lm is not None else None
        return NetemParams(
            **relay_values(self, NETEM),
            gemodel=GEParams(**relay_values(ge, GEMODEL)) if ge is not None else None,
            state=GIParams(**relay_values(gi, FOUR_STATE)) if gi is not None else None,
            slot=SlotParams(**relay_values(sl, SLOT)) if sl is not None else None,
            shaper=ShaperParams(**relay_values(sh, SHAPER)) if sh is not None else None,
        )

    def summary(self) -> str:
        """What it does as tc would write it: 'netem ...', 'tbf ...' or both ('' when nothing)."""
        parts = []
        if self.model_copy(update={"shaper": None}).active:
            parts.append(f"netem {self.tc()}")
        if self.shaper is not None:
            parts.append(f"tbf {self.shaper.tc()}")
        return " + ".join(parts)

    def tc(self) -> str:
        """The netem part as a `tc qdisc ... netem` argument string (for people and the kernel path)."""
        parts = [f"limit {self.limit}"]
        if self.delay or self.jitter:
            parts.append(f"delay {units.show_time(round(self.delay * 1e6))}")
            if self.jitter:
                parts.append(units.show_time(round(self.jitter * 1e6)))
                if self.delay_correlation:
                    parts.append(f"{self.delay_correlation:g}%")
            if self.distribution != "uniform":
                parts.append(
                    f"distribution {self.distribution if isinstance(self.distribution, str) else 'custom'}"
                )
        if self.loss:
            parts.append(
                f"loss {self.loss:g}%" + (f" {self.loss_correlation:g}%" if self.loss_correlation else "")
            )
        if self.loss_model is not None and self.loss_model.gemodel is not None:
            g = self.loss_model.gemodel
            parts.append(f"loss gemodel {g.p:g}% {g.r_value:g}% {g.one_minus_h:g}% {g.one_minus_k:g}%")
        if self.loss_model is not None and self.loss_model.state is not None:
            s = self.loss_model.state
            parts.append(f"loss state {s.p13:g}% {s.p31_value:g}% {s.p32:g}% {s.p23:g}% {s.p14:g}%")
        if self.ecn:
            parts.append("ecn")
        for name in ("duplicate", "corrupt"):
            p, c = getattr(self, name), getattr(self, f"{name}_correlation")
            if p:
                parts.append(f"{name} {p:g}%" + (f" {c:g}%" if c else ""))
        if self.reorder:
            parts.append(
                f"reorder {self.reorder:g}%"
                + (f" {self.reorder_correlation:g}%" if self.reorder_correlation else "")
            )
            parts.append(f"gap {self.gap_value}")
        if self.rate_bps:
            parts.append(f"rate {units.show_rate(self.rate_bps)}")
            if self.packet_overhead or self.cell_size or self.cell_overhead:
                parts.append(f"{self.packet_overhead} {self.cell_size} {self.cell_overhead}")
        if self.slot is not None:
            sl = self.slot
            if sl.distribution is not None:
                parts.append(
                    f"slot distribution {sl.distribution} {units.show_time(round((sl.delay or 0) * 1e6))} "
                    f"{units.show_time(round((sl.jitter or 0) * 1e6))}"
                )
            else:
                lo = round((sl.min or 0) * 1e6)
                hi = round((sl.max if sl.max is not None else sl.min or 0) * 1e6)
                parts.append(f"slot {units.show_time(lo)} {units.show_time(hi)}")
            if sl.packets:
                parts.append(f"packets {sl.packets}")
            if sl.bytes:
                parts.append(f"bytes {sl.bytes}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " ".join(parts)


class LinkImpairment(_Strict):
    """What a link's `impair:` holds: one Netem for both directions, or one per direction."""

    a_to_b: Netem = Field(default_factory=Netem)
    b_to_a: Netem = Field(default_factory=Netem)

    @model_validator(mode="before")
    @classmethod
    def _symmetric(cls, data: Any) -> Any:
        """A plain netem mapping applies to both directions (round trip = twice the delay)."""
        if isinstance(data, dict) and not ({"a_to_b", "b_to_a"} & set(data)):
            one = dict(data)
            if isinstance(one.get("seed"), int):  # independent but reproducible directions
                return {"a_to_b": one, "b_to_a": {**one, "seed": (one["seed"] + 1) % 2**64}}
            return {"a_to_b": one, "b_to_a": one}
        return data

    @classmethod
    def symmetric(cls, netem: Netem) -> LinkImpairment:
        """The same impairment both ways; with a seed, b_to_a uses seed + 1 (independent draws)."""
        back = netem if netem.seed is None else netem.model_copy(update={"seed": (netem.seed + 1) % 2**64})
        return cls(a_to_b=netem, b_to_a=back)

    def direction(self, key: Direction) -> Netem:
        """The impairment of one direction."""
        return self.a_to_b if key is Direction.A_TO_B else self.b_to_a

    def params(self) -> dict[Direction, NetemParams]:
        """{direction: engine params}, as Relay(impair=...) takes them."""
        return {Direction.A_TO_B: self.a_to_b.params(), Direction.B_TO_A: self.b_to_a.params()}

    @property
    def active(self) -> bool:
        """Either direction has something to do."""
        return self.a_to_b.active or self.b_to_a.active
