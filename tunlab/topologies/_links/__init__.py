"""Link types, one module each, behind a registry: what a link is, checked, made and drawn.

A new link type is one module here with a LinkModel and a LinkType subclass (see
docs/development.md, "Add a link type"); the registry finds it, the topology schema gains it,
and the engine, validation, graph and inspect ask it for what they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab.errors import LabError
from tunlab.topologies._links.base import CheckContext, LinkModel, LinkType
from tunlab.topologies._registry import Registry

if TYPE_CHECKING:
    from tunlab.topologies._runtime import Runtime

_REGISTRY: Registry[LinkType] = Registry(
    __name__,
    __path__,
    LinkType,
    key=lambda cls: getattr(cls, "name", None),
    order=lambda t: (t.rank, t.name),
    helpers=frozenset({"base", "wiring"}),
)


def link_types() -> dict[str, LinkType]:
    """Every link type by name, in rank order."""
    return _REGISTRY.all()


def link_type(name: str) -> LinkType:
    """The link type of that name (LabError listing the known ones)."""
    found = link_types().get(name)
    if found is None:
        raise LabError(f"unknown link type {name!r} (types: {', '.join(link_types())})")
    return found


def type_of(rt: Runtime, li: int) -> LinkType:
    """The type of a running lab's link li."""
    return link_type(rt.link(li).type)


def default_link_type() -> LinkType:
    """The type of a link that names none."""
    return next(t for t in link_types().values() if t.default)


__all__ = ["CheckContext", "LinkModel", "LinkType", "default_link_type", "link_type", "link_types", "type_of"]
