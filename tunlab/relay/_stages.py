"""Relay stages: what happens to packets between receive and send, one direction at a time.

A stage is `process(packets, now) -> packets` plus `next_deadline()`: the monotonic time it
next needs to run even if nothing arrives (a delay line releasing a packet, a token bucket
refilling), or None. The pump runs the stages in order on every batch it reads and whenever a
deadline passes, and waits on "readable or the earliest deadline". A stage may keep packets
(delay), drop them, reorder or change them. Stages that a process worker can run are built
from a plain spec (stage_from_spec), so they cross the process boundary as data.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from tunlab.relay._direction import Direction

Packet = bytes | bytearray | memoryview
PacketHook = Callable[[Direction, list[bytes]], list[bytes]]


class Stage(abc.ABC):
    """One step of a relay direction's pipeline."""

    #: packets are IP packets (split from super-packets) when True; whole frames when False
    needs_packets: bool = True
    #: sees packets only while engaged: a passthrough relay switches to packets for that time
    switches: bool = False

    @abc.abstractmethod
    def process(self, packets: list[Packet], now: float) -> list[Packet]:
        """Packets to pass on now (those this stage keeps come back from a later call)."""

    def next_deadline(self) -> float | None:
        """When process() must run again without new packets (monotonic seconds), or None."""
        return None

    def spec(self) -> dict[str, Any] | None:
        """A plain description a worker process can rebuild this stage from, or None (threads only)."""
        return None

    @property
    def engaged(self) -> bool:
        """Has work to do; a relay in passthrough mode moves whole frames while no stage has."""
        return True

    def attach(  # noqa: B027 - an optional hook
        self, *, l2: bool, counters: memoryview | None, frames: bool = False, virtio: bool = False
    ) -> None:
        """Called by the pump before the first packet: Ethernet frames or IP packets, the
        direction's stage counters (shared memory in a worker process), and whether the pump
        can hand over whole frames (passthrough; `virtio`: they carry a virtio-net header)."""

    def reconfigure(self, spec: dict[str, Any], now: float) -> None:
        """Take new settings while running (a control message); ValueError if this stage cannot."""
        raise ValueError(f"{type(self).__name__} cannot be reconfigured while running")


class HookStage(Stage):
    """A Python callable that sees (direction, [packet bytes]) and returns the packets to send."""

    def __init__(self, hook: PacketHook, direction: Direction) -> None:
        self.hook = hook
        self.direction = direction

    def process(self, packets: list[Packet], now: float) -> list[Packet]:
        """The hook's packets for this batch (copies of the packets it was given)."""
        out: list[Packet] = list(self.hook(self.direction, [bytes(p) for p in packets]))
        return out


class Pipeline:
    """Stages in order; the earliest deadline among them."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        self.stages = list(stages)

    def __bool__(self) -> bool:
        return bool(self.stages)

    @property
    def needs_packets(self) -> bool:
        """Some stage wants super-packets split into packets before it sees them."""
        return any(s.needs_packets for s in self.stages)

    @property
    def frames_only(self) -> bool:
        """Every engaged stage takes whole frames right now (see ImpairStage's delay-only mode)."""
        return all(not s.needs_packets for s in self.stages if s.engaged)

    @property
    def engaged(self) -> bool:
        """Some stage has work (see Stage.engaged)."""
        return any(s.engaged for s in self.stages)

    def run(self, packets: list[Packet], now: float) -> list[Packet]:
        """Each stage in turn; one with nothing to do (no packets, no deadline due) is skipped."""
        for stage in self.stages:
            if not stage.engaged:
                continue
            if not packets:
                due = stage.next_deadline()
                if due is None or due > now:
                    continue
            packets = stage.process(packets, now)
        return packets

    def next_deadline(self) -> float | None:
        """The earliest time (monotonic seconds) a stage has something to release, or None."""
        found = [d for d in (s.next_deadline() for s in self.stages) if d is not None]
        return min(found) if found else None

    def specs(self) -> list[dict[str, Any]]:
        """Specs of every stage, for a worker process; ValueError naming one that has none."""
        out = []
        for stage in self.stages:
            spec = stage.spec()
            if spec is None:
                raise ValueError(
                    f"{type(stage).__name__} runs Python code of this process: use workers='threads'"
                )
            out.append(spec)
        return out


STAGE_KINDS: dict[str, Callable[[dict[str, Any]], Stage]] = {}
# kinds tunlab ships, registered when their module is first imported (a worker imports on demand)
BUILTIN_KINDS = {"impair": "tunlab.relay.impair._stage"}


def register_stage(kind: str, build: Callable[[dict[str, Any]], Stage]) -> None:
    """Make a stage kind buildable from a spec {"kind": kind, ...} (in worker processes too)."""
    STAGE_KINDS[kind] = build


def stage_from_spec(spec: dict[str, Any]) -> Stage:
    """Build a stage from a plain spec {"kind": ..., ...} (what a worker process receives)."""
    kind = spec.get("kind")
    if str(kind) not in STAGE_KINDS and str(kind) in BUILTIN_KINDS:
        importlib.import_module(BUILTIN_KINDS[str(kind)])
    build = STAGE_KINDS.get(str(kind))
    if build is None:
        raise ValueError(
            f"unknown relay stage kind {kind!r} (known: {', '.join(sorted(STAGE_KINDS)) or 'none'})"
        )
    return build(spec)
