"""What a client asks each host by the lab's name (client.run on the host's worker): list,
use, take down and collect the parts held there. Each runs off the worker's event loop."""

from __future__ import annotations

from typing import Any

from tunlab.cluster._part import in_thread, part, parts


async def list_parts() -> list[dict[str, Any]]:
    """Every lab part this host holds."""
    return [p.info() for p in parts()]


# what another client may ask of a part (its creator holds the actor and asks it directly)
CALLS = frozenset(
    {"run", "impair", "link_stats", "health", "down", "info", "inspect", "processes", "capture"}
)


async def call(lab: str, method: str, *args: Any) -> Any:
    """One of CALLS on this host's part of lab, off the event loop."""
    if method not in CALLS:
        raise ValueError(f"unknown part call {method!r}")
    return await in_thread(getattr(part(lab), method), *args)


async def collect(silent_for: float) -> list[str]:
    """`tunlab gc --cluster` on this host: parts whose client has been silent for silent_for
    seconds (foreground ones: their client died), then the host's own gc (dead holders)."""
    from tunlab.topologies._cleanup import garbage_collect

    removed = []
    for p in parts():
        if p.orphaned(silent_for):
            problems = await in_thread(p.down, "`tunlab gc --cluster`: its client was gone")
            removed.append(f"lab {p.lab_name}: its client was gone")
            removed += [f"  problem: {x}" for x in problems]
    return removed + await in_thread(garbage_collect)
