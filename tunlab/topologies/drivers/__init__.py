"""Node drivers, one per kind, behind a registry: how a node is made, entered and removed.

A new kind is one module with a NodeDriver subclass and one line in DRIVERS; nothing else in
the engine, the lab, the CLI or gc names a kind.
"""

from __future__ import annotations

import importlib

from tunlab.errors import LabError
from tunlab.topologies.drivers.base import ExecResult, LabContext, NodeDriver, NodeHandle

# kind -> "module:class" (imported on first use: docker's SDK loads only for container labs)
DRIVERS: dict[str, str] = {
    "netns": "tunlab.topologies.drivers.netns:NetnsDriver",
    "container": "tunlab.topologies.drivers.container:ContainerDriver",
    "vm": "tunlab.topologies.drivers.vm:VmDriver",
}
_instances: dict[str, NodeDriver] = {}


def register_driver(kind: str, spec: str) -> None:
    """Add (or replace) the driver of a kind: spec is "module:class"."""
    DRIVERS[kind] = spec
    _instances.pop(kind, None)


def driver_for(kind: str) -> NodeDriver:
    """The driver of a node kind (one instance per process)."""
    found = _instances.get(kind)
    if found is not None:
        return found
    spec = DRIVERS.get(kind)
    if spec is None:
        raise LabError(f"unknown node kind {kind!r} (kinds: {', '.join(DRIVERS)})")
    module, _, cls = spec.partition(":")
    driver: NodeDriver = getattr(importlib.import_module(module), cls)()
    _instances[kind] = driver
    return driver


def all_drivers() -> list[NodeDriver]:
    return [driver_for(kind) for kind in DRIVERS]


__all__ = ["DRIVERS", "ExecResult", "LabContext", "NodeDriver", "NodeHandle", "all_drivers", "driver_for"]
