"""Where a link's impairment runs — the kernel's netem/tbf qdiscs or a relay — and applying it.

A tun-pair is a relay already: its impairment is a relay stage. A veth, bridge or vxlan link
uses the kernel's qdiscs (through pyroute2) when the kernel has them and they can express the
impairment; otherwise the engine builds the link through a relay (TAP devices in place of the
veth ends), which behaves the same on every kernel. The choice and its reason are recorded
and shown by `tunlab up` and `tunlab inspect`.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunlab.errors import LabError
from tunlab.relay._direction import DIRECTIONS
from tunlab.relay.impair._model import LinkImpairment, Netem
from tunlab.relay.impair._table import kernel_limits, netem_request, tbf_request

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from tunlab.topologies._fields import LinkModel

ROOT = 0xFFFFFFFF
TBF_HANDLE = 0x10000  # 1:
NETEM_HANDLE = 0x100000  # 10:
TBF_CHILD = 0x10001  # 1:1, tbf's only class


@dataclass(frozen=True)
class Placement:
    """How a link is impaired: 'relay' (its own, a tun-pair), 'inserted' (a relay in place of
    the kernel link), 'kernel' (qdiscs) or 'none' (not impaired at deploy); and why."""

    via: str
    reason: str

    @property
    def relayed(self) -> bool:
        return self.via in ("relay", "inserted")

    def describe(self) -> str:
        words = {
            "relay": "in the tun-pair's relay",
            "inserted": "through a relay inserted into the link",
            "kernel": "by kernel qdiscs (netem/tbf)",
            "none": "not impaired",
        }[self.via]
        return f"{words} ({self.reason})" if self.reason else words


_QDISCS: frozenset[str] | None = None


def kernel_qdiscs(scratch: str | None = None) -> frozenset[str]:
    """Which of netem and tbf this kernel offers: probed once per process on a veth in a scratch
    namespace (named `scratch`, e.g. one of the deploying lab's, so a crash leaves it to gc)."""
    global _QDISCS
    if _QDISCS is None:
        _QDISCS = _probe(scratch or f"tl-{secrets.token_hex(3)}-qdisc-probe")
    return _QDISCS


def _probe(name: str) -> frozenset[str]:
    from tunlab._linux.netns import NetNamespace

    found: set[str] = set()
    try:
        ns = NetNamespace.create(name)
    except OSError:
        return frozenset()
    try:
        with ns.iproute() as ipr:
            ipr.link("add", ifname="p0", kind="veth", peer="p1")
            index = ipr.link_lookup(ifname="p0")[0]
            for kind, kwargs in (
                ("netem", {"delay": 1000}),
                ("tbf", {"rate": "1mbit", "burst": 10000, "limit": 10000}),
            ):
                with contextlib.suppress(Exception):  # ENOENT: no such qdisc module
                    ipr.tc("add", kind, index, TBF_HANDLE, **kwargs)
                    found.add(kind)
                    ipr.tc("del", index=index, root=True)
    except Exception:  # noqa: S110 - a kernel without veth offers nothing usable: found stays empty
        pass
    finally:
        with contextlib.suppress(Exception):
            ns.delete()
    return frozenset(found)


def netem_features(n: Netem) -> bool:
    """Does the impairment need netem (anything beyond a token-bucket shaper)?"""
    return n.model_copy(update={"shaper": None}).active


def place(link: LinkModel, qdiscs: frozenset[str]) -> Placement:
    """Where a kernel link's impairment runs: qdiscs, or a relay inserted in its place (LabError
    when impair_via: kernel cannot be met). Link types with their own relay never ask."""
    imp = link.impairment
    if imp is None:
        return Placement("none", "")
    if link.impair_via == "relay":
        return Placement("inserted", "impair_via: relay")
    reasons: list[str] = []
    for n in (imp.a_to_b, imp.b_to_a):
        reasons += [r for r in kernel_limits(n) if r not in reasons]
    have = qdiscs
    need = set()
    for n in (imp.a_to_b, imp.b_to_a):
        if netem_features(n):
            need.add("netem")
        if n.shaper is not None:
            need.add("tbf")
    if not imp.active:  # declared empty, to be set at run time: anything may come
        need = {"netem", "tbf"}
    missing = sorted(need - have)
    if missing:
        reasons.append(f"this kernel has no sch_{' or sch_'.join(missing)}")
    if not reasons:
        return Placement("kernel", "")
    if link.impair_via == "kernel":
        raise LabError(
            f"impair_via: kernel cannot do this impairment: {'; '.join(reasons)} "
            "(use impair_via: auto or relay)"
        )
    return Placement("inserted", "; ".join(reasons))


# ---- the kernel path ---------------------------------------------------------------------------
def apply_kernel(ipr: IPRoute, index: int, n: Netem | None) -> None:
    """Replace an interface's root qdisc with the impairment (None or a no-op: remove it).

    A shaper and netem together are tbf at the root with netem as its child (mininet's order:
    netem decides loss and delay, the bucket paces what it releases)."""
    with contextlib.suppress(Exception):  # EINVAL/ENOENT: only the default qdisc was there
        ipr.tc("del", index=index, root=True)
    if n is None or not n.active:
        return
    if n.shaper is not None:
        ipr.tc("add", "tbf", index, TBF_HANDLE, **tbf_request(n))
        if netem_features(n):
            ipr.tc("add", "netem", index, NETEM_HANDLE, parent=TBF_CHILD, **netem_request(n))
        return
    ipr.tc("add", "netem", index, TBF_HANDLE, **netem_request(n))


def kernel_stats(ipr: IPRoute, index: int) -> dict[str, int]:
    """tc -s for an interface's qdiscs: sent, dropped, overlimits, backlog (summed)."""
    out = {"sent": 0, "sent_bytes": 0, "dropped": 0, "overlimits": 0, "backlog": 0, "backlog_bytes": 0}
    for q in ipr.get_qdiscs(index=index):
        if q.get_attr("TCA_KIND") not in ("netem", "tbf"):
            continue
        basic = q.get_nested("TCA_STATS2", "TCA_STATS_BASIC") or {}
        queue = q.get_nested("TCA_STATS2", "TCA_STATS_QUEUE") or {}
        if q["parent"] == ROOT:
            out["sent"] = int(basic.get("packets", 0))
            out["sent_bytes"] = int(basic.get("bytes", 0))
        out["dropped"] += int(queue.get("drops", 0))
        out["overlimits"] += int(queue.get("overlimits", 0))
        out["backlog"] += int(queue.get("qlen", 0))
        out["backlog_bytes"] += int(queue.get("backlog", 0))
    return out


def describe(imp: LinkImpairment | None) -> dict[str, str]:
    """Each direction as tc would print it ('' when that direction is not impaired)."""
    if imp is None:
        return {d.value: "" for d in DIRECTIONS}
    return {d.value: imp.direction(d).summary() for d in DIRECTIONS}
