"""Node drivers, one per kind, behind a registry: how a node is made, entered and removed.

A new kind is one module here with a NodeDriver subclass that names its kind and its pydantic
model (docs/development.md, "Add a node kind"); the registry finds it, the topology schema gains
it, and nothing in the engine, the lab, the CLI or gc names a kind. Modules load on first use:
docker's SDK only for container labs, pydantic only once a topology is read.
"""

from __future__ import annotations

from tunlab.errors import LabError
from tunlab.topologies._drivers.base import ExecResult, LabContext, NodeDriver, NodeHandle
from tunlab.topologies._registry import Registry

_REGISTRY: Registry[NodeDriver] = Registry(
    __name__,
    __path__,
    NodeDriver,
    key=lambda cls: getattr(cls, "kind", None),
    order=lambda d: (d.rank, d.kind),
    helpers=frozenset({"base", "sysctls", "waits"}),
)


def drivers() -> dict[str, NodeDriver]:
    """Every node kind's driver, in rank order (the first is the default kind)."""
    return _REGISTRY.all()


def driver_for(kind: str) -> NodeDriver:
    """The driver of a node kind (one instance per process)."""
    found = drivers().get(kind)
    if found is None:
        raise LabError(f"unknown node kind {kind!r} (kinds: {', '.join(drivers())})")
    return found


def default_kind() -> str:
    """The kind of a node that names none (and of a state record that lost it)."""
    return next(iter(drivers()))


def driver_of_record(record: dict[str, object]) -> NodeDriver:
    """The driver of a node from its state-file record."""
    return driver_for(str(record.get("kind") or default_kind()))


def all_drivers() -> list[NodeDriver]:
    return list(drivers().values())


__all__ = [
    "ExecResult",
    "LabContext",
    "NodeDriver",
    "NodeHandle",
    "all_drivers",
    "default_kind",
    "driver_for",
    "driver_of_record",
    "drivers",
]
