"""The topology file as pydantic models: what a lab is made of, before anything is created.

The node kinds (drivers/) and link types (links/) each own their model; this module puts them
together: the discriminated unions, the defaults every node may inherit, and the Topology.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from pydantic import Discriminator, Field, PrivateAttr, Tag, create_model, field_validator, model_validator

from tunlab.topologies._drivers import default_kind, drivers
from tunlab.topologies._fields import (
    IMPAIR_FORMS,
    NAME_RE,
    NODE_RE,
    Endpoint,
    Healthcheck,
    HostEntry,
    InterfaceSettings,
    NodeBase,
    NodeCommon,
    OffloadFeatures,
    PerDirection,
    Route,
    Strict,
)
from tunlab.topologies._links import LinkModel, default_link_type, link_types

__all__ = [
    "IMPAIR_FORMS",
    "KINDS",
    "LINK_TYPES",
    "NAME_RE",
    "NODE_CLASSES",
    "Defaults",
    "Endpoint",
    "Healthcheck",
    "InterfaceSettings",
    "Link",
    "LinkModel",
    "Node",
    "NodeBase",
    "OffloadFeatures",
    "PerDirection",
    "Route",
    "Topology",
    "kinds_with_field",
    "types_with_field",
]

KINDS: tuple[str, ...] = tuple(drivers())
NODE_CLASSES: dict[str, type[NodeBase]] = {kind: d.model for kind, d in drivers().items()}
LINK_TYPES: tuple[str, ...] = tuple(link_types())
LINK_CLASSES: dict[str, type[LinkModel]] = {name: t.model for name, t in link_types().items()}


def kinds_with_field(name: str) -> list[str]:
    """The node kinds that accept a field (for errors about a field in the wrong kind)."""
    return [kind for kind, cls in NODE_CLASSES.items() if name in cls.model_fields]


def types_with_field(name: str) -> list[str]:
    """The link types that accept a field (for errors about a field on the wrong type)."""
    return [t for t, cls in LINK_CLASSES.items() if name in cls.model_fields]


def _link_tag(value: Any) -> str:
    if isinstance(value, dict):
        found = value.get("type", default_link_type().name)
        return found if isinstance(found, str) else repr(found)
    return str(getattr(value, "type", default_link_type().name))


def _defaults_model() -> type[NodeCommon]:
    """Settings every node inherits unless it sets them: what all nodes have, plus each kind's
    own fields (those reach only nodes of that kind), plus the default kind."""
    bases: tuple[Any, ...] = (NodeCommon,)
    bases += tuple(d.fields for d in drivers().values() if d.fields is not None)
    kind_type: Any = Literal[KINDS] if KINDS else str
    model: Any = create_model(
        "Defaults",
        __base__=bases,
        __doc__="Settings every node inherits unless it sets them (dicts are merged, node keys win).\n\n"
        "Fields of one kind only reach nodes of that kind.",
        kind=(kind_type | None, None),
    )
    return cast("type[NodeCommon]", model)


if TYPE_CHECKING:
    Node = NodeBase
    Link = LinkModel
    Defaults = NodeCommon
else:
    Node = Annotated[
        Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in NODE_CLASSES.items())],  # noqa: UP007
        Discriminator("kind"),
    ]
    Link = Annotated[
        Union[tuple(Annotated[cls, Tag(name)] for name, cls in LINK_CLASSES.items())],  # noqa: UP007
        Discriminator(_link_tag),
    ]
    Defaults = _defaults_model()


class Topology(Strict):
    """A lab: nodes (network namespaces, containers, VMs) and the links between them."""

    name: str = Field(pattern=NAME_RE, max_length=40)
    vars: dict[str, Any] = Field(default_factory=dict, description="template variables")
    defaults: Defaults = Field(default_factory=Defaults)
    nodes: dict[str, Node] = Field(min_length=1)
    links: list[Link] = Field(default_factory=list)
    hosts: list[Annotated[str, Field(pattern=NAME_RE, max_length=64)] | HostEntry] = Field(
        default_factory=list,
        description="the cluster hosts the lab may use (Dask worker names); default: every worker",
    )
    _resolved: tuple[tuple[int, ...], dict[str, NodeBase]] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, data: Any) -> Any:
        """A node without `kind` has the defaults' kind (the default kind when there is none)."""
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
            return data
        defaults = data.get("defaults")
        kind = defaults.get("kind") if isinstance(defaults, dict) else None
        nodes = {}
        for name, node in data["nodes"].items():
            if node is None:
                node = {}
            if isinstance(node, dict) and "kind" not in node:
                node = {**node, "kind": kind or default_kind()}
            nodes[name] = node
        return {**data, "nodes": nodes}

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, value: dict[str, NodeBase]) -> dict[str, NodeBase]:
        for name in value:
            if not re.fullmatch(NODE_RE, name) or len(name) > 32:
                raise ValueError(
                    f"node name {name!r}: use 1-32 letters, digits, '_' or '-' (it names a namespace)"
                )
        return value

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON Schema, with the node kinds and link types as named `Node` and `Link`
        definitions (editors show them)."""
        schema = super().model_json_schema(*args, **kwargs)
        props = schema.get("properties", {})
        for key, where, title, description in (
            ("Node", props.get("nodes", {}), "additionalProperties",
             f"A node; `kind` ({', '.join(KINDS)}) says which fields it has."),
            ("Link", props.get("links", {}), "items",
             f"A link; `type` ({', '.join(LINK_TYPES)}) says which fields it has."),
        ):  # fmt: skip
            union = where.get(title)
            if isinstance(union, dict) and "oneOf" in union:
                schema.setdefault("$defs", {})[key] = {"title": key, "description": description, **union}
                where[title] = {"$ref": f"#/$defs/{key}"}
        return schema

    def resolved_nodes(self) -> dict[str, NodeBase]:
        """Nodes with the defaults applied (only the defaults' fields that their kind has);
        worked out once (validate, plan and deploy all ask), again if nodes or defaults change."""
        key = (id(self.nodes), len(self.nodes), id(self.defaults), *map(id, self.nodes.values()))
        if self._resolved is None or self._resolved[0] != key:
            self._resolved = (key, _resolve(self))
        return dict(self._resolved[1])


def _resolve(topo: Topology) -> dict[str, NodeBase]:
    """Each node with the defaults' fields its kind has: a dict (sysctls, env, interfaces) is
    merged under the node's own, anything else is the node's if it set it. Both sides are
    validated already and node models check no field against another, so the merge copies
    values instead of validating every node again (10,000 nodes: 0.6 s less)."""
    defaults = topo.defaults
    given = defaults.model_fields_set - {"kind"}
    out: dict[str, NodeBase] = {}
    for name, node in topo.nodes.items():
        update: dict[str, Any] = {}
        for key in given & set(type(node).model_fields):
            default = getattr(defaults, key)
            if key not in node.model_fields_set:
                update[key] = copy.copy(default)  # shallow: no two nodes share a dict or list
            elif isinstance(default, dict) and isinstance(mine := getattr(node, key), dict):
                update[key] = {**default, **mine}
        out[name] = node.model_copy(update=update) if update else node
    return out
