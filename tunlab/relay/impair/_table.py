"""Every impairment parameter once: its unit, default and bounds, what it means in netem, and
how the kernel's netem/tbf take it — or that only the relay can do it.

The models (model.py) take their fields' defaults, bounds and descriptions from here; the
kernel path builds its tc requests from the `kernel` column, and a parameter without one sends
a link to the relay (kernel_limits); the CLI reads `key=value` by the unit column; the relay's
plain numbers (NetemParams) come from the `relay` column. A new parameter is one row here,
one field in its model, and — where the kernel knows it — its kernel name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

U32_MAX = 2**32 - 1
S32_MAX = 2**31 - 1
# the longest a relay can hold a packet: poll() waits at most INT_MAX milliseconds at a time
MAX_TIME_MS = float(S32_MAX)
MAX_RATE_BPS = 10**15  # 1 Pbit/s: beyond any link a relay or a qdisc can pace
KERNEL_MAX_TIME_MS = U32_MAX / 1000  # netem takes times as u32 microseconds
KERNEL_MAX_RATE_BPS = U32_MAX * 8  # pyroute2 passes netem's and tbf's rate as u32 bytes/s

UNITS = {
    "time": "ms (or '10ms', '1.5s', '250us')",
    "mbit": "Mbit/s",
    "percent": "% (or '5%')",
    "rate": "bit/s (or '100mbit', '125kbps')",
    "size": "bytes (or '15k')",
    "count": "a whole number",
    "flag": "true/false",
    "choice": "one of the listed words",
    "table": "a name or a list of signed 16-bit values",
    "model": "a mapping (nested parameters)",
}


@dataclass(frozen=True)
class Param:
    """One parameter: name (as in files and the CLI; nested ones are dotted), unit, default,
    bounds, netem's meaning, the kernel's name for it (None: relay only) and the relay's."""

    name: str
    unit: str
    default: Any
    meaning: str
    kernel: str | None = None  # the pyroute2 netem/tbf argument; None: only the relay does it
    relay: str | None = None  # the NetemParams (or nested params) field it becomes
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    kernel_max: float | None = None  # above this the kernel cannot take it (the relay can)
    needs: str | None = None  # the kernel takes it only along with this parameter being set
    attr: str | None = None  # the model's attribute, where the file's name is not one (1-h)
    derived: str | None = None  # the model property the kernel and the relay take (gap_value)

    @property
    def key(self) -> str:
        """The name in files (the last part of a nested name)."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def field_name(self) -> str:
        return self.attr or self.key

    def field(self, **extra: Any) -> Any:
        """A pydantic Field with this row's default, bounds and description."""
        bounds: dict[str, Any] = {
            k: v
            for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("lt", self.lt))
            if v is not None
        }
        description = f"{self.meaning} [{UNITS.get(self.unit, self.unit)}]"
        if self.attr is not None:
            extra = {"alias": self.key, **extra}
        options: dict[str, Any] = {"description": description, **bounds, **extra}
        if isinstance(self.default, (list, dict)):
            return Field(default_factory=type(self.default), **options)
        return Field(self.default, **options)


def _rows(*rows: Param) -> dict[str, Param]:
    return {r.name: r for r in rows}


TIME: Any = {"ge": 0, "le": MAX_TIME_MS}  # a time: from 0 to what the relay can wait
NETEM = _rows(
    Param("delay", "time", 0.0, "packets wait: time_to_send = now + delay ± jitter", "delay", "delay_ns",
          **TIME, kernel_max=KERNEL_MAX_TIME_MS),
    Param("jitter", "time", 0.0, "random variation of the delay (reorders unless preserve_order; at most "
          "2147 ms, netem's limit)", "jitter", "jitter_ns", ge=0),
    Param("delay_correlation", "percent", 0.0, "how much a delay draw depends on the last", "delay_corr",
          "delay_correlation", ge=0, lt=100, needs="jitter"),
    Param("distribution", "table", "uniform", "the jitter's distribution: uniform, normal, pareto, "
          "paretonormal or a table (8192 = one sigma)", None, "distribution"),
    Param("loss", "percent", 0.0, "random loss", "loss", "loss", ge=0, le=100),
    Param("loss_correlation", "percent", 0.0, "how much a loss draw depends on the last", "loss_corr",
          "loss_correlation", ge=0, lt=100, needs="loss"),
    Param("loss_model", "model", None, "bursty loss: gemodel (Gilbert-Elliott) or state (4-state)"),
    Param("ecn", "flag", False, "mark ECT packets CE instead of dropping them", None, "ecn"),
    Param("duplicate", "percent", 0.0, "send a copy (through the whole pipeline again)", "duplicate",
          "duplicate", ge=0, le=100),
    Param("duplicate_correlation", "percent", 0.0, "how much a duplicate draw depends on the last",
          "dup_corr", "duplicate_correlation", ge=0, lt=100, needs="duplicate"),
    Param("corrupt", "percent", 0.0, "flip one bit of the packet", "prob_corrupt", "corrupt", ge=0, le=100,
          needs="corrupt"),
    Param("corrupt_correlation", "percent", 0.0, "how much a corrupt draw depends on the last",
          "corr_corrupt", "corrupt_correlation", ge=0, lt=100, needs="corrupt"),
    Param("reorder", "percent", 0.0, "send some packets at once, ahead of the delayed ones",
          "prob_reorder", "reorder", ge=0, le=100, needs="reorder"),
    Param("reorder_correlation", "percent", 0.0, "how much a reorder draw depends on the last",
          "corr_reorder", "reorder_correlation", ge=0, lt=100, needs="reorder"),
    Param("gap", "count", 0, "reorder every gap-th packet (0 with reorder: 1)", "gap", "gap", ge=0,
          le=U32_MAX, needs="reorder", derived="gap_value"),
    Param("rate", "rate", None, "serialisation: each packet takes len / rate after the previous", "rate",
          "rate_bps", ge=8, le=MAX_RATE_BPS, kernel_max=KERNEL_MAX_RATE_BPS, derived="rate_bps"),
    Param("bw", "mbit", None, "rate in Mbit/s (mininet's name)", "rate", "rate_bps", gt=0,
          le=MAX_RATE_BPS / 1e6, kernel_max=KERNEL_MAX_RATE_BPS / 1e6, derived="rate_bps"),
    Param("packet_overhead", "count", 0, "bytes added to every packet for rate", "packet_overhead",
          "packet_overhead", ge=-(2**31), le=S32_MAX, needs="rate"),
    Param("cell_size", "count", 0, "rate counts whole cells of this size", "cell_size", "cell_size", ge=0,
          le=S32_MAX, needs="rate"),
    Param("cell_overhead", "count", 0, "bytes added to every cell for rate", "cell_overhead",
          "cell_overhead", ge=-(2**31), le=S32_MAX, needs="rate"),
    Param("slot", "model", None, "bursty MACs: packets leave in slots"),
    Param("limit", "count", 1000, "packets held at most; more are tail-dropped", "limit", "limit", ge=0,
          le=S32_MAX),
    Param("seed", "count", None, "every random draw comes from it (reproducible)", None, "seed", ge=0,
          le=2**64 - 1),
    Param("shaper", "model", None, "a token bucket (tbf) after netem", "tbf"),
    Param("preserve_order", "flag", False, "jitter without reordering", None, "preserve_order"),
    Param("compat", "choice", "netem", "netem: correlations as netem draws them; ideal: independent streams",
          None, "ideal", derived="ideal"),
)  # fmt: skip
SLOT = _rows(
    Param("slot.min", "time", None, "shortest slot", None, "min_ns", **TIME),
    Param("slot.max", "time", None, "longest slot (default min)", None, "max_ns", **TIME,
          derived="max_value"),
    Param("slot.distribution", "choice", None, "slot lengths from a distribution instead", None,
          "distribution"),
    Param("slot.delay", "time", None, "with distribution: the mean slot length", None, "delay_ns", **TIME),
    Param("slot.jitter", "time", None, "with distribution: its spread", None, "jitter_ns", **TIME),
    Param("slot.packets", "count", 0, "packets per slot at most (0: no budget)", None, "packets", ge=0,
          le=S32_MAX),
    Param("slot.bytes", "size", 0, "bytes per slot at most (0: no budget)", None, "bytes", ge=0, le=S32_MAX),
)  # fmt: skip
SHAPER = _rows(
    Param("shaper.rate", "rate", None, "the bucket's fill rate", "rate", "rate_bps", ge=8, le=MAX_RATE_BPS,
          kernel_max=KERNEL_MAX_RATE_BPS),
    Param("shaper.burst", "size", None, "bucket depth in bytes (at least the MTU)", "burst", "burst", gt=0,
          le=U32_MAX),
    Param("shaper.limit", "size", None, "queue size in bytes", "limit", "limit", ge=0, le=U32_MAX,
          derived="limit_bytes"),
    Param("shaper.latency", "time", None, "or the longest a packet may wait (sets limit)", "limit", "limit",
          **TIME, derived="limit_bytes"),
    Param("shaper.peakrate", "rate", None, "a second, faster bucket for bursts", None, "peakrate_bps", ge=8,
          le=MAX_RATE_BPS),
    Param("shaper.mtu", "size", None, "the second bucket's depth (with peakrate)", None, "mtu", ge=0,
          le=U32_MAX),
    Param("shaper.mpu", "size", 0, "smallest packet size counted", None, "mpu", ge=0, le=U32_MAX),
    Param("shaper.overhead", "count", 0, "bytes added to every packet", None, "overhead", ge=0, le=65535),
    Param("shaper.linklayer", "choice", "ethernet", "ethernet, or atm (48-byte cells)", None, "atm",
          derived="atm"),
)  # fmt: skip
GEMODEL = _rows(
    Param("loss_model.gemodel.p", "percent", None, "Good -> Bad per packet", None, "p", ge=0, le=100),
    Param("loss_model.gemodel.r", "percent", None, "Bad -> Good per packet (default 100% - p)", None, "r",
          ge=0, le=100, derived="r_value"),
    Param("loss_model.gemodel.1-h", "percent", 100.0, "loss in Bad", None, "one_minus_h", ge=0, le=100,
          attr="one_minus_h"),
    Param("loss_model.gemodel.1-k", "percent", 0.0, "loss in Good", None, "one_minus_k", ge=0, le=100,
          attr="one_minus_k"),
)  # fmt: skip
FOUR_STATE = _rows(
    *(Param(f"loss_model.state.{name}", "percent", default, meaning, None, name, ge=0, le=100,
            derived="p31_value" if name == "p31" else None)
      for name, default, meaning in (
          ("p13", None, "good reception -> burst loss"),
          ("p31", None, "burst loss -> good reception (default 100% - p13)"),
          ("p32", 0.0, "burst loss -> good in a burst"),
          ("p23", 100.0, "good in a burst -> burst loss"),
          ("p14", 0.0, "good reception -> isolated loss"),
      )),
)  # fmt: skip
TABLE: dict[str, Param] = {**NETEM, **SLOT, **SHAPER, **GEMODEL, **FOUR_STATE}


def param(name: str) -> Any:
    """The pydantic Field for a parameter (used in the models' class bodies)."""
    return TABLE[name].field()


# ---- the kernel path -------------------------------------------------------------------------------
KernelValue = Callable[[Any], Any]
# how a model value becomes pyroute2's: times in microseconds, rates as "<n>bit"
KERNEL_UNITS: dict[str, KernelValue] = {
    "time": lambda ms: round(ms * 1000),
    "rate": lambda bps: f"{int(bps)}bit",
    "mbit": lambda bps: f"{int(bps)}bit",  # read as rate_bps (bit/s)
    "percent": lambda p: p,
    "count": lambda n: n,
    "size": lambda n: n,
}


DERIVED_UNITS = {"limit_bytes": "size", "rate_bps": "rate"}  # a derived value's own unit


def _unit(row: Param) -> str:
    """The unit of what the kernel and relay take (tbf's latency becomes a byte limit)."""
    return DERIVED_UNITS.get(row.derived or "", row.unit)


def _value(model: Any, row: Param) -> Any:
    return getattr(model, row.field_name)


def _kernel_value(model: Any, row: Param) -> Any:
    return getattr(model, row.derived or row.field_name)


def _is_set(model: Any, name: str) -> bool:
    value = _kernel_value(model, TABLE[name])
    return value is not None and value != 0 and value is not False


def kernel_limits(netem: Any) -> list[str]:
    """Why the kernel's netem/tbf (as pyroute2 drives them) cannot do this impairment: every set
    parameter without a kernel name, and values above what the kernel takes; [] if it can."""
    out: list[str] = []
    for rows, model in ((NETEM, netem), (SHAPER, netem.shaper)):
        if model is None:
            continue
        for row in rows.values():
            value = _value(model, row)
            if value is None or value == row.default or row.unit == "model":
                continue
            if row.kernel is None:
                out.append(f"{row.name} (only the relay does it)")
            elif row.kernel_max is not None and value > row.kernel_max:
                out.append(f"{row.name} above {_show(row.unit, row.kernel_max)} (the kernel takes 32 bits)")
    for name in ("loss_model", "slot"):
        if getattr(netem, name) is not None:
            out.append(f"{name} (only the relay does it)")
    return out


def kernel_request(model: Any, rows: Mapping[str, Param]) -> dict[str, Any]:
    """pyroute2's arguments for the set parameters of a model (netem's or tbf's rows)."""
    req: dict[str, Any] = {}
    for row in rows.values():
        if row.kernel is None or row.unit == "model":
            continue
        if _value(model, row) is None or (row.needs is not None and not _is_set(model, row.needs)):
            continue
        req[row.kernel] = KERNEL_UNITS[_unit(row)](_kernel_value(model, row))
    return req


def _show(unit: str, value: float) -> str:
    from tunlab.relay.impair import _units as units

    if unit == "time":
        if value >= 86400e3:
            return f"{value / 86400e3:.1f} days"
        return units.show_time(round(value * 1e6))
    if unit in ("rate", "mbit"):
        bps = value * (1e6 if unit == "mbit" else 1)
        if bps >= 1e12:
            return f"{bps / 1e12:g}tbit"
        return units.show_rate(round(bps))
    return f"{int(value)}" if value == int(value) else f"{value:g}"


def netem_request(netem: Any) -> dict[str, Any]:
    """pyroute2's netem arguments for an impairment (times in microseconds, percentages)."""
    return kernel_request(netem, NETEM)


def tbf_request(netem: Any) -> dict[str, Any]:
    """pyroute2's tbf arguments for an impairment's shaper (rate in bit/s, sizes in bytes)."""
    return kernel_request(netem.shaper, SHAPER)


# ---- the relay ------------------------------------------------------------------------------------
RELAY_UNITS: dict[str, KernelValue] = {  # model value -> the relay's plain number
    "time": lambda ms: round((ms or 0) * 1e6),  # nanoseconds
    "rate": lambda bps: int(bps or 0),
    "mbit": lambda bps: int(bps or 0),  # read as rate_bps (bit/s)
    "size": lambda n: int(n or 0),
    "table": lambda t: list(t) if isinstance(t, list) else t,
}


def relay_values(model: Any, rows: Mapping[str, Param]) -> dict[str, Any]:
    """{NetemParams (or nested params) field: plain value} for a model's relay-column rows."""
    out: dict[str, Any] = {}
    for row in rows.values():
        if row.relay is None or row.unit == "model":
            continue
        out[row.relay] = RELAY_UNITS.get(_unit(row), lambda v: v)(_kernel_value(model, row))
    return out


# ---- the command line ------------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def cli_value(name: str, raw: str) -> Any:
    """A `key=value` setting of `tunlab impair` as its parameter's unit reads it: flags as
    booleans, tables as JSON lists, everything else a string for the model (units!).
    ValueError naming the key and what it takes."""
    row = TABLE.get(name) or TABLE.get(_alias(name))
    if row is None:
        import difflib

        close = difflib.get_close_matches(name, list(TABLE), n=1, cutoff=0.6)
        hint = f": did you mean {close[0]}?" if close else " (see docs/impairments.md)"
        raise ValueError(f"setting {name!r}: no such impairment parameter{hint}")
    if row.unit == "model":
        raise ValueError(f"setting {name!r}: give its parts, like {name}.{_first_part(name)}=...")
    text = raw.strip()
    if row.unit == "flag":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"setting {name}={raw!r}: write true or false")
    if row.unit == "table" and text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"setting {name}: a table is written as JSON, e.g. [0, 100, -100]") from None
    return text


def settings_mapping(settings: Iterable[str]) -> dict[str, Any]:
    """`key=value` settings (nested keys dotted: shaper.rate=10mbit) as the mapping a link's
    `impair:` holds; ValueError naming the setting that is wrong."""
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"setting {item!r}: write key=value (e.g. delay=50ms)")
        direction, _, rest = key.partition(".")
        name = rest if direction in ("a_to_b", "b_to_a") and rest else key
        where = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = where.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"setting {item!r}: {part} is already a value")
            where = nxt
        where[parts[-1]] = cli_value(name, raw)
    return out


def _alias(name: str) -> str:
    return {"max_queue_size": "limit"}.get(name, name)


def _first_part(name: str) -> str:
    for other in TABLE:
        if other.startswith(name + "."):
            return other[len(name) + 1 :].split(".")[0]
    return "..."


def markdown() -> str:
    """The table as docs/impairments.md shows it (a test keeps the two the same)."""
    lines = ["| parameter | unit | default | bounds | the kernel's netem/tbf |", "|---|---|---|---|---|"]
    for row in TABLE.values():
        bounds = " ".join(
            f"{op} {_show(row.unit, v) if row.unit in ('time', 'rate', 'mbit') else _show('', v)}"
            for op, v in (("≥", row.ge), (">", row.gt), ("≤", row.le), ("<", row.lt))
            if v is not None
        )
        kernel = f"`{row.kernel}`" if row.kernel else "relay only"
        if row.kernel_max is not None:
            kernel += f" (up to {_show(row.unit, row.kernel_max)})"
        default = "—" if row.default is None else f"`{row.default}`"
        lines.append(f"| `{row.name}` | {row.unit} | {default} | {bounds or '—'} | {kernel} |")
    return "\n".join(lines) + "\n"
