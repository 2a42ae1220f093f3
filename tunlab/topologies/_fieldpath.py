"""Field paths as people write them, for every message about a topology: links[0].endpoints[1]."""

from __future__ import annotations

from typing import Any


def format_path(loc: tuple[Any, ...]) -> str:
    """A field path as people write it: links[0].endpoints[1].node."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
