"""Node drivers: how a node of each kind is made, entered and removed."""

from __future__ import annotations

from tunlab.topologies.drivers.base import NodeDriver, NodeHandle, driver_for

__all__ = ["NodeDriver", "NodeHandle", "driver_for"]
