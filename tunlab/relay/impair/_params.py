"""An impairment as plain numbers (ns, bytes/s, u32 probabilities): what the engine runs on.

Built from a validated model (Netem.params()) in the parent; crosses to a worker process as
JSON and is rebuilt there without pydantic (workers import no third-party code).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GEParams:
    """Gilbert-Elliott, percentages."""

    p: float
    r: float
    one_minus_h: float
    one_minus_k: float


@dataclass(frozen=True)
class GIParams:
    """The 4-state model, percentages."""

    p13: float
    p31: float
    p32: float
    p23: float
    p14: float


@dataclass(frozen=True)
class SlotParams:
    min_ns: int = 0
    max_ns: int = 0
    distribution: str | list[int] | None = None
    delay_ns: int = 0
    jitter_ns: int = 0
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class ShaperParams:
    """tbf: rates in bit/s, sizes in bytes."""

    rate_bps: int
    burst: int
    limit: int
    peakrate_bps: int = 0
    mtu: int = 0
    mpu: int = 0
    overhead: int = 0
    atm: bool = False


@dataclass(frozen=True)
class NetemParams:
    """One direction's impairment; the defaults pass everything straight through."""

    delay_ns: int = 0
    jitter_ns: int = 0
    delay_correlation: float = 0.0
    distribution: str | list[int] = "uniform"
    loss: float = 0.0
    loss_correlation: float = 0.0
    gemodel: GEParams | None = None
    state: GIParams | None = None
    ecn: bool = False
    duplicate: float = 0.0
    duplicate_correlation: float = 0.0
    corrupt: float = 0.0
    corrupt_correlation: float = 0.0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    gap: int = 0
    rate_bps: int = 0
    packet_overhead: int = 0
    cell_size: int = 0
    cell_overhead: int = 0
    slot: SlotParams | None = None
    limit: int = 1000
    seed: int | None = None
    shaper: ShaperParams | None = None
    preserve_order: bool = False
    ideal: bool = False

    @property
    def active(self) -> bool:
        """Anything to do at all."""
        return self != NetemParams(limit=self.limit, seed=self.seed, ideal=self.ideal) or self.limit == 0

    @property
    def fate_per_frame(self) -> bool:
        """Only a fixed delay (and a limit): every segment of a super-packet gets the same fate and
        the same send time, so the relay may keep super-packets whole (no split, no coalesce)."""
        plain = NetemParams(delay_ns=self.delay_ns, limit=self.limit, seed=self.seed, ideal=self.ideal)
        return self == plain

    def to_json(self) -> dict[str, Any]:
        """Plain data for a control message or a worker's spec."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetemParams:
        """The params back from to_json()'s data."""
        data = dict(data)
        for key, sub in (
            ("gemodel", GEParams),
            ("state", GIParams),
            ("slot", SlotParams),
            ("shaper", ShaperParams),
        ):
            if data.get(key) is not None:
                data[key] = sub(**data[key])
        return cls(**data)
