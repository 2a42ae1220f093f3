"""Assertions for network tests: plain functions that raise AssertionError with a precise message."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunlab.devices.offload._virtio import GSO_TYPE_NAMES, VIRTIO_NET_HDR_GSO_ECN, VirtioNetHdr
from tunlab.testing import _traffic as traffic
from tunlab.testing._capture import Capture, CapturedPacket
from tunlab.testing._traffic import PingResult, StreamResult

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

_GSO_NUMBERS = {name.lower(): number for number, name in GSO_TYPE_NAMES.items()}


def _where(source: Any) -> str:
    return getattr(source, "name", None) or type(source).__name__


# ---- reachability ---------------------------------------------------------------------------
def assert_reachable(source: Any, address: str, *, count: int = 3, min_received: int = 1) -> PingResult:
    """At least min_received of count pings from source (a node or a peer) get an answer.

    Example:
        ```python
        assert_reachable(topology.node("h1"), "198.18.2.2")
        ```
    """
    res = traffic.ping(source, address, count=count)
    if res.received < min_received:
        raise AssertionError(
            f"{address} is not reachable from {_where(source)}: {res.received}/{res.sent} echo replies "
            f"(wanted at least {min_received})"
        )
    return res


def assert_unreachable(source: Any, address: str, *, count: int = 2) -> PingResult:
    """No ping from source to address is answered."""
    res = traffic.ping(source, address, count=count, timeout=1.0)
    if res.received:
        raise AssertionError(
            f"{address} answered {res.received}/{res.sent} pings from {_where(source)}: expected unreachable"
        )
    return res


# ---- streams --------------------------------------------------------------------------------
def assert_delivered_exactly(result: StreamResult) -> None:
    """Every byte arrived, in order (TCP), or every datagram arrived intact (UDP).

    Example:
        ```python
        result = traffic.tcp_stream(lab.node("h1"), lab.node("h2"), "198.18.2.2", nbytes=8 << 20)
        assert_delivered_exactly(result)
        ```
    """
    if result.protocol == "tcp":
        if result.received_bytes != result.sent_bytes:
            raise AssertionError(
                f"TCP delivered {result.received_bytes} of {result.sent_bytes} bytes "
                f"({result.sent_bytes - result.received_bytes} missing)"
            )
        if not result.exact:
            raise AssertionError(
                f"TCP delivered {result.received_bytes} bytes but they differ from what was sent"
            )
        return
    if result.datagrams_received != result.datagrams_sent:
        raise AssertionError(
            f"UDP delivered {result.datagrams_received} of {result.datagrams_sent} datagrams"
        )
    if not result.exact:
        raise AssertionError("UDP delivered every datagram but some were corrupted")


def assert_loss_at_most(result: StreamResult | PingResult, max_loss: float) -> None:
    """Loss (a fraction 0..1) is at most max_loss."""
    if result.loss > max_loss + 1e-12:
        raise AssertionError(f"loss {result.loss:.2%} is above the allowed {max_loss:.2%}")


def assert_throughput(
    result: StreamResult,
    *,
    min_gbps: float | None = None,
    baseline_gbps: float | None = None,
    tolerance_pct: float | None = None,
) -> None:
    """Throughput at least min_gbps, and/or within ±tolerance_pct of a baseline."""
    got = result.gbps
    if min_gbps is not None and got < min_gbps:
        raise AssertionError(f"throughput {got:.3f} Gbit/s is below {min_gbps:.3f} Gbit/s")
    if baseline_gbps is not None:
        if tolerance_pct is None:
            raise ValueError("tolerance_pct: give the allowed deviation from the baseline in percent")
        diff = (got - baseline_gbps) / baseline_gbps * 100
        if abs(diff) > tolerance_pct:
            raise AssertionError(
                f"throughput {got:.3f} Gbit/s is {diff:+.1f}% from the baseline {baseline_gbps:.3f} Gbit/s "
                f"(allowed ±{tolerance_pct}%)"
            )


# ---- packet geometry ------------------------------------------------------------------------
def _gso_number(gso_type: int | str | None) -> int | None:
    if gso_type is None or isinstance(gso_type, int):
        return gso_type
    key = gso_type.lower().replace("virtio_net_hdr_gso_", "")
    if key not in _GSO_NUMBERS:
        raise ValueError(f"gso_type: {gso_type!r} is not one of {', '.join(_GSO_NUMBERS)}")
    return _GSO_NUMBERS[key]


def _gso_items(
    source: Capture | Sequence[CapturedPacket] | Sequence[bytes], outgoing: bool | None
) -> list[tuple[int, int, int]]:
    """(gso_type, gso_size, length) of each packet or frame (frames: virtio-net header first)."""
    items: list[Any] = source.packets if isinstance(source, Capture) else list(source)
    out = []
    for item in items:
        if isinstance(item, CapturedPacket):
            if outgoing is not None and item.outgoing != outgoing:
                continue
            out.append((item.gso_type, item.gso_size, len(item.data)))
        else:
            hdr = VirtioNetHdr.decode(item)
            out.append((hdr.gso_type, hdr.gso_size, len(item) - 10))
    return out


def assert_gso_seen(
    source: Capture | Sequence[CapturedPacket] | Sequence[bytes],
    *,
    min_count: int = 1,
    gso_type: int | str | None = None,
    gso_size: int | None = None,
    outgoing: bool | None = None,
) -> int:
    """At least min_count GSO super-packets (of gso_type, with gso_size) in a capture or frames."""
    want_type = _gso_number(gso_type)
    items = _gso_items(source, outgoing)
    supers = [
        i for i in items if i[0] and (want_type is None or (i[0] & ~VIRTIO_NET_HDR_GSO_ECN) == want_type)
    ]
    if gso_size is not None:
        sized = [i for i in supers if i[1] == gso_size]
        if len(sized) < min_count:
            seen = sorted({i[1] for i in supers})
            raise AssertionError(
                f"{len(sized)} super-packets with gso_size {gso_size} (wanted at least {min_count}); "
                f"gso_size values seen: {seen or 'none'}"
            )
        return len(sized)
    if len(supers) < min_count:
        kinds = sorted({i[0] for i in items if i[0]})
        raise AssertionError(
            f"{len(supers)} GSO super-packets{f' of type {gso_type}' if gso_type is not None else ''} among "
            f"{len(items)} packets (wanted at least {min_count}); gso types seen: {kinds or 'none'}"
        )
    return len(supers)


def assert_coalesced(
    sizes: Sequence[int],
    *,
    expected: Sequence[int] | None = None,
    segments: int | None = None,
    min_ratio: float | None = None,
) -> float:
    """Packet sizes after GRO: exactly `expected`, and/or `segments` merged at >= min_ratio each.

    The coalescing ratio is segments / packets (how many wire segments each packet stands for).
    """
    sizes = list(sizes)
    if expected is not None and sizes != list(expected):
        raise AssertionError(f"coalesced sizes {sizes} differ from the expected {list(expected)}")
    if not sizes:
        raise AssertionError("no packets: nothing was coalesced")
    ratio = (segments / len(sizes)) if segments is not None else float("nan")
    if min_ratio is not None:
        if segments is None:
            raise ValueError("min_ratio needs segments: how many segments were sent")
        if ratio < min_ratio:
            raise AssertionError(
                f"coalescing ratio {ratio:.2f} ({segments} segments in {len(sizes)} packets) "
                f"is below {min_ratio}"
            )
    return ratio


def assert_segmented(sizes: Sequence[int], *, total: int, mss: int) -> None:
    """A payload of `total` bytes left as N x mss plus the remainder, in order."""
    full, rest = divmod(total, mss)
    expected = [mss] * full + ([rest] if rest else [])
    if list(sizes) != expected:
        detail = f"{len(sizes)} segments {list(sizes)[:8]}{'...' if len(sizes) > 8 else ''}"
        raise AssertionError(
            f"{total} bytes should leave as {full} x {mss}{f' + {rest}' if rest else ''}; got {detail}"
        )


# ---- counters -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counters:
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_dropped: int
    tx_dropped: int
    rx_errors: int
    tx_errors: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


def counters(place: Any, interface: str) -> Counters:
    """Netlink statistics of an interface in a node (or anything with .netns)."""
    ns = getattr(place, "netns", place)
    if callable(ns):
        ns = ns()
    with ns.iproute() as ipr:
        found = ipr.link_lookup(ifname=interface)
        if not found:
            raise AssertionError(f"no interface '{interface}' in {_where(place)}")
        stats = ipr.link("get", index=found[0])[0].get_attr("IFLA_STATS64") or {}
    return Counters(*(int(stats.get(f, 0)) for f in Counters.__dataclass_fields__))


def assert_counter_delta(
    before: Counters,
    after: Counters,
    field: str,
    expected: int,
    *,
    tolerance: int | float = 0,
) -> int:
    """after.field - before.field is expected ± tolerance (an int, or a fraction below 1)."""
    if field not in Counters.__dataclass_fields__:
        raise ValueError(f"field: {field!r} is not one of {', '.join(Counters.__dataclass_fields__)}")
    delta: int = getattr(after, field) - getattr(before, field)
    allowed = tolerance * expected if isinstance(tolerance, float) and tolerance < 1 else tolerance
    if not math.isclose(delta, expected, abs_tol=allowed) and abs(delta - expected) > allowed:
        raise AssertionError(f"{field} changed by {delta}, expected {expected} ± {allowed:g}")
    return delta
