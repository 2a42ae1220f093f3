"""Device layer: L3 (TUN, IP packets) or L2 (TAP, Ethernet frames)."""

from __future__ import annotations

import enum


class Layer(enum.Enum):
    """What a device carries: L3 = TUN (IP packets), L2 = TAP (Ethernet frames)."""

    L2 = "L2"
    L3 = "L3"

    @property
    def kind(self) -> str:
        """ "tun" or "tap"."""
        return "tap" if self is Layer.L2 else "tun"
