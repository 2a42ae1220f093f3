"""tc's units, parsed as tc parses them: times, percentages, rates and sizes.

Strings follow tc (`"10ms"`, `"5%"`, `"100mbit"`, `"15k"`); numbers are in documented units
(milliseconds, percent, bit/s, bytes). A bare-number *string* is refused: tc reads it as
nanoseconds (netem) or microseconds (tbf), a classic trap — the error says so.
"""

from __future__ import annotations

import math
import re

_TIME = {
    "s": 10**9, "sec": 10**9, "secs": 10**9,
    "ms": 10**6, "msec": 10**6, "msecs": 10**6,
    "us": 10**3, "usec": 10**3, "usecs": 10**3,
    "ns": 1, "nsec": 1, "nsecs": 1,
}  # fmt: skip
_RATE = {  # bit/s
    "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
    "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
    "kibps": 8 * 2**10, "mibps": 8 * 2**20, "gibps": 8 * 2**30, "tibps": 8 * 2**40,
}  # fmt: skip
_SIZE = {
    "": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30,
    "kbit": 2**10 // 8, "mbit": 2**20 // 8, "gbit": 2**30 // 8,
}  # fmt: skip
_NUMBER = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*"


class UnitError(ValueError):
    """A value tc would not read (the message says what would)."""


def _number(text: str) -> tuple[float, str]:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z%]*)\s*", text)
    if m is None:
        raise UnitError(f"{text!r} is not a number with a unit")
    number = float(m.group(1))
    if not math.isfinite(number):
        raise UnitError(f"{text!r} is too large to be a number")
    return number, m.group(2)


def _plain(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnitError(f"expected {what}, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise UnitError(f"{value!r} is not a finite number")
    return float(value)


def _finite(number: float, value: object) -> float:
    if not math.isfinite(number):
        raise UnitError(f"{value!r} is too large (no finite number of the unit's smallest step)")
    return number


def time_ns(value: object) -> int:
    """A time: "10ms", "1.5s", "250us", "100ns"; a number is milliseconds."""
    if isinstance(value, str):
        number, unit = _number(value)
        if unit == "":
            raise UnitError(
                f"{value!r} has no unit: write {value.strip()}ms (tc would read a bare number as "
                "nanoseconds), or give a number (milliseconds) instead of a string"
            )
        scale = _TIME.get(unit.lower())
        if scale is None:
            raise UnitError(f"{value!r}: unknown time unit {unit!r} (use s, ms, us or ns)")
        ns = number * scale
    else:
        ns = _plain(value, "a time like '10ms' or a number of milliseconds") * 10**6
    if ns < 0:
        raise UnitError(f"{value!r}: a time cannot be negative")
    return round(_finite(ns, value))


def percent(value: object) -> float:
    """A probability: "5%" or 5 (percent), 0..100."""
    if isinstance(value, str):
        number, unit = _number(value)
        if unit not in ("%", ""):
            raise UnitError(f"{value!r}: a percentage is written like '5%'")
        if unit == "":
            raise UnitError(f"{value!r} has no '%': write {value.strip()}% or give a number (percent)")
        p = number
    else:
        p = _plain(value, "a percentage like '5%' or a number of percent")
    if not 0 <= p <= 100:
        raise UnitError(f"{value!r} is outside 0..100%")
    return p


def rate_bps(value: object) -> int:
    """A rate in bit/s: "100mbit", "512kbit", "1gbit", "125kbps" (bytes!); a number is bit/s."""
    if isinstance(value, str):
        number, unit = _number(value)
        if unit == "":
            raise UnitError(
                f"{value!r} has no unit: write {value.strip()}bit, {value.strip()}kbit or "
                f"{value.strip()}mbit, or give a number (bit/s)"
            )
        scale = _RATE.get(unit.lower())
        if scale is None:
            raise UnitError(
                f"{value!r}: unknown rate unit {unit!r} (bit, kbit, mbit, gbit; kbps = kilobytes/s)"
            )
        bits = number * scale
    else:
        bits = _plain(value, "a rate like '100mbit' or a number of bit/s")
    if bits < 8:
        raise UnitError(f"{value!r}: a rate below 8 bit/s is 0 bytes/s (tc would switch it off)")
    return round(_finite(bits, value))


def size_bytes(value: object) -> int:
    """A size: 1500, "15k", "1mb", "64kbit" (like tc: k = 1024 bytes)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if m is None:
            raise UnitError(f"{value!r} is not a size like 1500 or 15k")
        scale = _SIZE.get(m.group(2).lower())
        if scale is None:
            raise UnitError(f"{value!r}: unknown size unit {m.group(2)!r} (k, m, g bytes)")
        n = float(m.group(1)) * scale
    else:
        n = _plain(value, "a size in bytes")
    if n < 0 or n != int(_finite(n, value)):
        raise UnitError(f"{value!r}: a size is a whole number of bytes >= 0")
    return int(n)


def show_time(ns: int) -> str:
    """ns as tc prints it: 10ms, 1.5ms, 250us, 3s."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns >= scale:
            return f"{ns / scale:g}{unit}"
    return f"{ns}ns"


def show_rate(bps: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"
