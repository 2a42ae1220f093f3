"""A running lab's links: change or clear a link's impairment live, read its counters.

`lab.link("h1:eth0").impair(delay="50ms", loss="1%")`, `.clear()`, `.stats()`. A new
impairment is validated completely before anything changes; a kernel-qdisc change that fails
half-way puts the old one back. Held packets stay queued across a change in a relay.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tunlab.errors import LabError
from tunlab.relay._direction import DIRECTIONS, Direction
from tunlab.relay.impair._model import LinkImpairment, Netem
from tunlab.relay.impair._table import kernel_limits
from tunlab.topologies import _impairments as impairments
from tunlab.topologies._fieldpath import format_path
from tunlab.topologies._links import link_types, type_of

if TYPE_CHECKING:
    from tunlab.topologies._fields import LinkModel
    from tunlab.topologies._runtime import Runtime

_LOCK = threading.Lock()  # one change at a time (the control socket's thread, the test's)


class ImpairmentError(LabError, ValueError):
    """A bad impairment (nothing was changed); the message names the field and the value."""


def parse_impairment(
    value: Any,
    direction: Direction | str | None = None,
    current: LinkImpairment | None = None,
    *,
    both_ways: Callable[[Netem], LinkImpairment] = LinkImpairment.symmetric,
) -> LinkImpairment:
    """A full LinkImpairment from what a user gives: a Netem, a LinkImpairment, a mapping (one
    direction's or both), or None (clear). With direction, only that side changes; without it,
    both_ways says what one impairment means on the link (a bridge's goes on the way in)."""
    try:
        way = None if direction is None else Direction.parse(direction)
    except ValueError as exc:
        raise ImpairmentError(str(exc)) from None
    try:
        if value is None:
            new_one: Netem | LinkImpairment = Netem()
        elif isinstance(value, (Netem, LinkImpairment)):
            new_one = value
        elif isinstance(value, Mapping):
            if set(DIRECTIONS) & set(value):
                if way is not None:
                    raise ImpairmentError("give a_to_b/b_to_a, or direction with one impairment, not both")
                new_one = LinkImpairment.model_validate(dict(value))
            else:
                new_one = Netem.model_validate(dict(value))
        else:
            raise ImpairmentError(f"impairment: expected a mapping, a Netem or None, got {value!r}")
    except ValidationError as exc:
        raise ImpairmentError(_format(exc)) from None
    if isinstance(new_one, LinkImpairment):
        return new_one
    if way is None:
        return both_ways(new_one)
    base = current or LinkImpairment()
    return base.model_copy(update={way.value: new_one})


def _format(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{format_path(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


class LabLink:
    """One link of a running lab (lab.link(index, name or 'node:interface'))."""

    def __init__(self, rt: Runtime, index: int) -> None:
        self._rt = rt
        self.index = index
        self.spec = rt.topo.links[index]
        self._type = type_of(rt, index)

    @property
    def label(self) -> str:
        return " <-> ".join(f"{e.node}:{e.interface}" for e in self.spec.endpoints)

    @property
    def placement(self) -> impairments.Placement:
        return self._rt.placements[self.index]

    @property
    def impairment(self) -> LinkImpairment | None:
        """What is set now (None: never impaired)."""
        return self._rt.impairs.get(self.index)

    def _relays(self) -> dict[tuple[int, int], Any]:
        return {k: r for k, r in self._rt.relays.items() if k[0] == self.index}

    def failures(self) -> list[str]:
        """What died of this link's relays (worker, cause); [] while it carries traffic."""
        return [failure for relay in self._relays().values() for failure in relay.failures()]

    def _check_alive(self) -> None:
        dead = self.failures()
        if dead:
            raise LabError(
                f"link {self.label}: its relay died ({'; '.join(dead)}), so nothing crosses it and "
                "it cannot be impaired; take the lab down and up again"
            )

    # ---- changing it --------------------------------------------------------------------------
    def impair(
        self, impairment: Any = None, *, direction: Direction | None = None, **netem: Any
    ) -> LinkImpairment:
        """Set the impairment (keyword arguments are Netem fields: delay="50ms", loss="1%").

        Both directions get it unless direction is Direction.A_TO_B or B_TO_A. Returns what is set.
        """
        if netem:
            if impairment is not None:
                raise ImpairmentError("give an impairment or keyword arguments, not both")
            impairment = netem
        new = parse_impairment(impairment, direction, self.impairment, both_ways=self.spec.both_ways)
        with _LOCK:
            self._check_alive()
            self._apply(new)
        return new

    def clear(self, direction: Direction | None = None) -> None:
        """No impairment (on one direction, or both)."""
        with _LOCK:
            self._check_alive()
            self._apply(parse_impairment(None, direction, self.impairment, both_ways=self.spec.both_ways))

    @contextlib.contextmanager
    def impaired(
        self, impairment: Any = None, *, direction: Direction | None = None, **netem: Any
    ) -> Iterator[LabLink]:
        """Impair for the duration of a with block, then put back what was set before."""
        before = self.impairment
        self.impair(impairment, direction=direction, **netem)
        try:
            yield self
        finally:
            with _LOCK:
                self._apply(before or LinkImpairment())

    def _apply(self, new: LinkImpairment) -> None:
        rt, li = self._rt, self.index
        placement = self.placement
        if placement.via in ("none", "kernel"):
            placement = self._choose_for_runtime(new, placement)
        if placement.relayed:
            self._apply_relays(new)
        else:
            self._apply_kernel(new)
        rt.placements[li] = placement
        rt.impairs[li] = new
        rt.state.impairments[str(li)] = {
            "via": placement.via,
            "reason": placement.reason,
            **impairments.describe(new),
        }
        with contextlib.suppress(OSError):
            rt.state.save()

    def _choose_for_runtime(self, new: LinkImpairment, now: impairments.Placement) -> impairments.Placement:
        """A kernel link: the kernel's qdiscs, if they can do the new impairment (checked before
        anything changes)."""
        if not new.active:
            return now if now.reason != "set at run time" else impairments.Placement("none", "")
        limits = [r for n in (new.a_to_b, new.b_to_a) for r in kernel_limits(n)]
        have = impairments.kernel_qdiscs(f"tl-{self._rt.lab_id}-qprobe")
        need = {"netem" for n in (new.a_to_b, new.b_to_a) if impairments.netem_features(n)}
        need |= {"tbf" for n in (new.a_to_b, new.b_to_a) if n.shaper is not None}
        missing = sorted(need - have)
        if missing:
            limits.append(f"this kernel has no sch_{' or sch_'.join(missing)}")
        if limits:
            raise ImpairmentError(
                f"links[{self.index}] ({self.label}) is a kernel {self._type.name} link and the kernel "
                f"cannot do this impairment ({'; '.join(dict.fromkeys(limits))}): declare `impair: {{}}` "
                "on the link so the lab is deployed with a relay there, which can take any impairment "
                "at run time"
            )
        return now if now.via == "kernel" else impairments.Placement("kernel", "set at run time")

    def _apply_relays(self, new: LinkImpairment) -> None:
        for key, relay in self._relays().items():
            relay.impair(self._type.relay_impairment(key, new))

    def _apply_kernel(self, new: LinkImpairment) -> None:
        rt = self._rt
        old = self.impairment or LinkImpairment()
        done: list[tuple[Any, int, Netem]] = []
        try:
            for ns, ifname, key in self._type.kernel_targets(rt, self.index):
                ipr = rt.ipr(ns)
                index = rt.index(ns, ifname)
                impairments.apply_kernel(ipr, index, getattr(new, key))
                done.append((ipr, index, getattr(old, key)))
        except Exception as exc:
            for ipr, index, previous in reversed(done):
                with contextlib.suppress(Exception):
                    impairments.apply_kernel(ipr, index, previous)
            raise LabError(
                f"links[{self.index}]: the kernel refused the impairment ({exc}); the old one is back"
            ) from exc
        finally:
            rt.close_netlink()

    # ---- reading it -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters per direction as `tc -s` shows them, summed over a link's relays or qdiscs."""
        out: dict[str, Any] = {"via": self.placement.via, "reason": self.placement.reason}
        out.update(impairments.describe(self.impairment))
        totals: dict[Direction, dict[str, int]] = {d: {} for d in DIRECTIONS}
        if self.placement.relayed:
            for relay_key, relay in self._relays().items():
                snap = relay.snapshot()
                for key, name in self._type.relay_directions(relay_key):
                    counters = snap[key].impairment() or {}
                    for k, v in counters.items():
                        if k != "generation":
                            totals[name][k] = totals[name].get(k, 0) + v
        elif self.placement.via == "kernel":
            try:
                for ns, ifname, key in self._type.kernel_targets(self._rt, self.index):
                    got = impairments.kernel_stats(self._rt.ipr(ns), self._rt.index(ns, ifname))
                    for k, v in got.items():
                        totals[key][k] = totals[key].get(k, 0) + v
            finally:
                self._rt.close_netlink()
        for d in DIRECTIONS:
            out[f"{d.value}_stats"] = totals[d]
        return out


def find_link(rt: Runtime, selector: int | str) -> int:
    """A link index from an index, a link name or one of its endpoints ('node:interface')."""
    return link_index(rt.topo.links, selector)


def link_index(links: Sequence[LinkModel], selector: int | str) -> int:
    """find_link() over a topology's links (a lab across hosts finds its links so)."""
    if isinstance(selector, int) and not isinstance(selector, bool):
        if 0 <= selector < len(links):
            return selector
    elif isinstance(selector, str):
        if selector.isdigit() and int(selector) < len(links):
            return int(selector)
        types = link_types()
        for li, link in enumerate(links):
            if selector in types[link.type].selectors(li, link):
                return li
            if any(f"{e.node}:{e.interface}" == selector for e in link.endpoints):
                return li
    known = ", ".join(
        f"{li} ({' <-> '.join(f'{e.node}:{e.interface}' for e in link.endpoints)})"
        for li, link in enumerate(links)
    )
    raise ImpairmentError(
        f"no link {selector!r}: give its index, its name or one of its ends as node:interface "
        f"(links: {known or 'none'})"
    )
