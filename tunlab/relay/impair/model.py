"""What an impairment is: netem's parameters (and tbf's), validated with tc's own rules.

Values are given as tc writes them (`"10ms"`, `"5%"`, `"100mbit"`, `"15k"`) or as numbers in
documented units — milliseconds, percent, bit/s, bytes — and are kept in those units, so a
model dumps and re-reads to itself. Semantics follow Linux netem (see docs/topologies.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tunlab.relay.direction import Direction
from tunlab.relay.impair import units
from tunlab.relay.impair.params import GEParams, GIParams, NetemParams, ShaperParams, SlotParams

MAX_JITTER_NS = 2_147_483_647  # the kernel clamps jitter here; we refuse beyond


def _ms(value: Any) -> Any:
    if value is None:
        return None
    try:
        return units.time_ns(value) / 1e6
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None


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
        return units.rate_bps(value)
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None


def _bytes(value: Any) -> Any:
    if value is None:
        return None
    try:
        return units.size_bytes(value)
    except units.UnitError as exc:
        raise ValueError(str(exc)) from None


Ms = Annotated[float, BeforeValidator(_ms)]  # milliseconds
Pct = Annotated[float, BeforeValidator(_pct)]  # percent 0..100
Correlation = Annotated[float, BeforeValidator(_pct), Field(lt=100)]
Bps = Annotated[int, BeforeValidator(_bps)]  # bit/s
Size = Annotated[int, BeforeValidator(_bytes)]  # bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GilbertElliott(_Strict):
    """`loss gemodel P [R [1-H [1-K]]]`: Good/Bad states, loss decided on the state before moving."""

    p: Pct = Field(description="Good -> Bad per packet")
    r: Pct | None = Field(None, description="Bad -> Good per packet (default 100% - p)")
    one_minus_h: Pct = Field(100.0, alias="1-h", description="loss in Bad")
    one_minus_k: Pct = Field(0.0, alias="1-k", description="loss in Good")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def r_value(self) -> float:
        return 100.0 - self.p if self.r is None else self.r

    def stationary_loss(self) -> float:
        """Expected loss fraction (0..1)."""
        p, r = self.p / 100, self.r_value / 100
        if p + r == 0:
            return self.one_minus_k / 100
        return (r * self.one_minus_k / 100 + p * self.one_minus_h / 100) / (p + r)


class FourState(_Strict):
    """`loss state P13 [P31 [P32 [P23 [P14]]]]`: the 4-state Markov model (fate = state entered)."""

    p13: Pct
    p31: Pct | None = Field(None, description="default 100% - p13")
    p32: Pct = 0.0
    p23: Pct = 100.0
    p14: Pct = 0.0

    @property
    def p31_value(self) -> float:
        return 100.0 - self.p13 if self.p31 is None else self.p31

    @model_validator(mode="after")
    def _sums(self) -> FourState:
        if self.p13 + self.p14 > 100:
            raise ValueError(f"p13 + p14 = {self.p13 + self.p14}% is over 100% (they leave state 1)")
        if self.p31_value + self.p32 > 100:
            raise ValueError(f"p31 + p32 = {self.p31_value + self.p32}% is over 100% (they leave state 3)")
        return self

    def stationary_loss(self) -> float:
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

    min: Ms | None = None
    max: Ms | None = None
    distribution: Literal["uniform", "normal", "pareto", "paretonormal"] | None = None
    delay: Ms | None = None
    jitter: Ms | None = None
    packets: int = Field(0, ge=0, le=2**31 - 1, description="0: no packet budget")
    bytes: Size = Field(0, le=2**31 - 1, description="0: no byte budget")

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

    rate: Bps
    burst: Size = Field(gt=0, description="bucket depth in bytes (at least the MTU)")
    limit: Size | None = Field(None, description="queue size in bytes")
    latency: Ms | None = Field(None, description="or the longest a packet may wait (sets limit)")
    peakrate: Bps | None = None
    mtu: Size | None = Field(None, description="second bucket's depth (needed with peakrate)")
    mpu: Size = 0
    overhead: int = Field(0, ge=0, le=65535)
    linklayer: Literal["ethernet", "atm"] = "ethernet"

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

    delay: Ms = 0.0
    jitter: Ms = 0.0
    delay_correlation: Correlation = 0.0
    distribution: Distribution = "uniform"
    loss: Pct = 0.0
    loss_correlation: Correlation = 0.0
    loss_model: LossModel | None = None
    ecn: bool = False
    duplicate: Pct = 0.0
    duplicate_correlation: Correlation = 0.0
    corrupt: Pct = 0.0
    corrupt_correlation: Correlation = 0.0
    reorder: Pct = 0.0
    reorder_correlation: Correlation = 0.0
    gap: int = Field(0, ge=0, le=2**32 - 1)
    rate: Bps | None = None
    bw: float | None = Field(None, gt=0, description="Mbit/s, mininet's name for rate")
    packet_overhead: int = Field(0, ge=-(2**31), le=2**31 - 1)
    cell_size: int = Field(0, ge=0, le=2**31 - 1)
    cell_overhead: int = Field(0, ge=-(2**31), le=2**31 - 1)
    slot: Slot | None = None
    limit: int = Field(1000, ge=0, le=2**31 - 1, description="packets held at most")
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    shaper: TokenBucket | None = None
    preserve_order: bool = False
    compat: Literal["netem", "ideal"] = "netem"

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
        if self.bw is not None:
            return int(self.bw * 1e6)
        return self.rate

    @property
    def gap_value(self) -> int:
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
                    "(much less than the configured percentage fire); use loss_model or compat: ideal"
                )
        if self.limit == 0:
            out.append("limit 0 drops every packet")
        return out

    def params(self) -> NetemParams:
        """The engine's plain numbers (ns, bit/s, bytes) for this impairment."""
        lm = self.loss_model
        ge = lm.gemodel if lm is not None else None
        gi = lm.state if lm is not None else None
        sl = self.slot
        sh = self.shaper
        return NetemParams(
            delay_ns=_ns(self.delay),
            jitter_ns=_ns(self.jitter),
            delay_correlation=self.delay_correlation,
            distribution=list(self.distribution)
            if isinstance(self.distribution, list)
            else self.distribution,
            loss=self.loss,
            loss_correlation=self.loss_correlation,
            gemodel=GEParams(ge.p, ge.r_value, ge.one_minus_h, ge.one_minus_k) if ge is not None else None,
            state=GIParams(gi.p13, gi.p31_value, gi.p32, gi.p23, gi.p14) if gi is not None else None,
            ecn=self.ecn,
            duplicate=self.duplicate,
            duplicate_correlation=self.duplicate_correlation,
            corrupt=self.corrupt,
            corrupt_correlation=self.corrupt_correlation,
            reorder=self.reorder,
            reorder_correlation=self.reorder_correlation,
            gap=self.gap_value,
            rate_bps=self.rate_bps or 0,
            packet_overhead=self.packet_overhead,
            cell_size=self.cell_size,
            cell_overhead=self.cell_overhead,
            slot=None
            if sl is None
            else SlotParams(
                min_ns=_ns(sl.min or 0),
                max_ns=_ns(sl.max if sl.max is not None else sl.min or 0),
                distribution=sl.distribution,
                delay_ns=_ns(sl.delay or 0),
                jitter_ns=_ns(sl.jitter or 0),
                packets=sl.packets,
                bytes=sl.bytes,
            ),
            limit=self.limit,
            seed=self.seed,
            shaper=None
            if sh is None
            else ShaperParams(
                rate_bps=sh.rate,
                burst=sh.burst,
                limit=sh.limit_bytes,
                peakrate_bps=sh.peakrate or 0,
                mtu=sh.mtu or 0,
                mpu=sh.mpu,
                overhead=sh.overhead,
                atm=sh.linklayer == "atm",
            ),
            preserve_order=self.preserve_order,
            ideal=self.compat == "ideal",
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
        return self.a_to_b if key is Direction.A_TO_B else self.b_to_a

    def params(self) -> dict[Direction, NetemParams]:
        """{direction: engine params}, as Relay(impair=...) takes them."""
        return {Direction.A_TO_B: self.a_to_b.params(), Direction.B_TO_A: self.b_to_a.params()}

    @property
    def active(self) -> bool:
        return self.a_to_b.active or self.b_to_a.active


def _ns(ms: float) -> int:
    return round(ms * 1e6)
