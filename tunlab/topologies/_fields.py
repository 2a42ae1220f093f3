"""Field types every part of a topology shares: interfaces, endpoints, routes, healthchecks,
what every node has, and the impairment forms. Link types (links/) and node kinds (drivers/)
build their own models from these; models.py puts them together into a Topology.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from tunlab.relay._direction import DIRECTIONS
from tunlab.relay.impair._model import LinkImpairment, Netem

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NODE_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


def _on_off(value: Any) -> Any:
    """Accept on/off, yes/no and true/false for feature switches (YAML turns on/off into bools)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("on", "yes", "true", "1"):
            return True
        if low in ("off", "no", "false", "0"):
            return False
    return value


def _listify(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, (str, ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return [value]
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not key or "=" in key:
            raise ValueError(f"environment variable name {key!r}: it must be non-empty and have no '='")
    return value


Switch = Annotated[bool, BeforeValidator(_on_off)]
Argv = Annotated[list[str], Field(min_length=1, description="a program and its arguments (no shell)")]
Env = Annotated[dict[str, str], AfterValidator(_env_names)]
U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
OptSwitch = Annotated[bool | None, BeforeValidator(_on_off)]
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = re.compile(rf"({_OCTET})\.({_OCTET})\.({_OCTET})\.({_OCTET})(?:/([0-9]|[12][0-9]|3[0-2]))?")


def _dotted(value: Any) -> tuple[int, int] | None:
    """(address, prefix) of a plain 'a.b.c.d[/p]' string, without ipaddress's per-octet parse
    (the largest cost of validating a big lab); None for anything else, which ipaddress judges."""
    if not isinstance(value, str):
        return None
    match = _DOTTED.fullmatch(value)
    if match is None:
        return None
    a, b, c, d, prefix = match.groups()
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d), 32 if prefix is None else int(prefix)


def _fast_v4_interface(value: Any) -> Any:
    parsed = _dotted(value)
    return value if parsed is None else ipaddress.IPv4Interface(parsed)


def _fast_v4_address(value: Any) -> Any:
    parsed = _dotted(value)
    return value if parsed is None or "/" in value else ipaddress.IPv4Address(parsed[0])


def _v4_list(value: Any) -> Any:
    """_listify, with plain dotted addresses parsed on the fast path."""
    value = _listify(value)
    return [_fast_v4_interface(v) for v in value] if isinstance(value, list) else value


IPv4List = Annotated[list[ipaddress.IPv4Interface], BeforeValidator(_v4_list)]
IPv6List = Annotated[list[ipaddress.IPv6Interface], BeforeValidator(_listify)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OffloadFeatures(Strict):
    """ethtool features of an interface; unset ones are left as the kernel made them."""

    gro: OptSwitch = None
    gso: OptSwitch = None
    tso: OptSwitch = None
    tx_checksum: OptSwitch = Field(None, alias="tx-checksum")
    rx_checksum: OptSwitch = Field(None, alias="rx-checksum")
    sg: OptSwitch = None

    def wanted(self) -> dict[str, bool]:
        """{feature name as in `ethtool -K`: on/off} for the features that are set."""
        out: dict[str, bool] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                out[field.alias or name] = value
        return out


class InterfaceSettings(Strict):
    """Settings of one interface (in a node's `interfaces`, or on a link endpoint)."""

    type: Literal["tun", "tap"] | None = Field(
        None, description="tun/tap: a device made by tunlab's device library (fd held by the lab)"
    )
    ipv4: IPv4List = Field(default_factory=list, description="addresses as 'addr/prefix'")
    ipv6: IPv6List = Field(default_factory=list)
    mtu: int | None = Field(None, ge=68, le=65535)
    mac: str | None = None
    offload: OffloadFeatures | OptSwitch = Field(
        None,
        description="tun/tap: true for the virtio-net header (super-packets); other interfaces: "
        "ethtool features {gro, gso, tso, tx-checksum, rx-checksum, sg: on|off}, or on/off for all",
    )
    multi_queue: OptSwitch = None
    queues: int | None = Field(
        None, ge=1, le=16, description="kind: vm — virtio-net queues (multi-queue TAP)"
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from tunlab.devices._config import parse_mac

        return parse_mac(value, "mac")

    def merged_with(self, other: InterfaceSettings) -> InterfaceSettings:
        """These settings with other's explicitly set fields on top (both are validated
        already: the merge copies values, it does not validate them again)."""
        given = other.model_fields_set & set(InterfaceSettings.model_fields)
        if not given:
            return self
        return self.model_copy(update={name: getattr(other, name) for name in given})


class Endpoint(InterfaceSettings):
    """One end of a link: node:interface, plus its settings."""

    node: str
    interface: str


def brief_endpoint(value: Any) -> Any:
    """'node:interface' as an endpoint mapping (the brief form of links' endpoints)."""
    if isinstance(value, str):
        node, sep, iface = value.partition(":")
        if not sep or not node or not iface:
            raise ValueError(f"endpoint {value!r}: write it as 'node:interface'")
        return {"node": node, "interface": iface}
    return value


EndpointSpec = Annotated[Endpoint, BeforeValidator(brief_endpoint)]


class Route(Strict):
    """A route in a node: dst is a prefix, 'default' (IPv4) or 'default6'."""

    dst: str
    via: Annotated[
        ipaddress.IPv4Address | ipaddress.IPv6Address | None, BeforeValidator(_fast_v4_address)
    ] = None
    dev: str | None = None
    metric: U32 | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, value: str) -> str:
        if value in ("default", "default6"):
            return value
        try:
            _prefix(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a prefix (like 198.18.2.0/24), 'default' or 'default6'"
            ) from None
        return value

    @model_validator(mode="after")
    def _target(self) -> Route:
        if self.via is None and self.dev is None:
            raise ValueError("a route needs 'via' (next hop) or 'dev' (interface)")
        return self

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The destination as a network ("default" is 0.0.0.0/0, or ::/0 with an IPv6 next hop)."""
        if self.dst == "default":
            return _prefix("::/0" if self.via is not None and self.via.version == 6 else "0.0.0.0/0")
        if self.dst == "default6":
            return _prefix("::/0")
        return _prefix(self.dst)


@functools.lru_cache(maxsize=65536)
def _prefix(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A route destination parsed once (validation, the catalog and deploy all ask; networks
    are immutable, so the cached object is safe to share)."""
    return ipaddress.ip_network(text, strict=False)


class Healthcheck(Strict):
    """A node is ready once every given check passes: a command succeeds, a file appears, a
    TCP port accepts connections, a log line is seen (containers). Checked every interval."""

    command: Argv | None = None
    file: str | None = None
    port: int | None = Field(None, ge=1, le=65535, description="TCP port on 127.0.0.1 inside the node")
    log: str | None = Field(None, description="container: a regular expression its log must match")
    timeout: float = Field(30.0, gt=0, le=86400)
    interval: float = Field(0.2, gt=0, le=3600)

    @model_validator(mode="after")
    def _something(self) -> Healthcheck:
        if self.command is None and self.file is None and self.port is None and self.log is None:
            raise ValueError("a healthcheck needs at least one of command, file, port or log")
        return self


class NodeCommon(Strict):
    """What every kind of node has."""

    sysctls: dict[str, str | int | bool] = Field(default_factory=dict)
    env: Env = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    exec: list[Argv] = Field(default_factory=list, description="argv lists run after deploy")
    healthcheck: Healthcheck | None = Field(None, description="wait until the node is ready")
    stop_grace: float = Field(
        2.0,
        ge=0,
        le=600,
        description="seconds the node's processes get between SIGTERM and SIGKILL when it goes down",
    )

    @field_validator("exec", mode="before")
    @classmethod
    def _argv_lists(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    raise ValueError(
                        f"exec entries are argv lists, like [ping, -c1, 198.18.0.1], not the string "
                        f"{item!r} (no shell is involved)"
                    )
        return value

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not re.fullmatch(r"net(\.[A-Za-z0-9_-]+)+", key):
                raise ValueError(f"sysctl {key!r}: only per-namespace net.* keys can be set")
        return value


class NodeBase(NodeCommon):
    """A node of any kind: its kind (the driver that makes it) and its interfaces.

    Each kind's model (in its driver module) adds the kind's own fields to this."""

    kind: str
    interfaces: dict[str, InterfaceSettings] = Field(default_factory=dict)
    host: str | None = Field(
        None,
        pattern=NAME_RE,
        max_length=64,
        description="the cluster host (a Dask worker's name) the node runs on: placed automatically "
        "when absent, not used on one machine (docs/cluster.md)",
    )


class HostEntry(Strict):
    """A cluster host a lab may use: a Dask worker's name, and the address other hosts reach it
    at for cross-host links when that is not the worker's own."""

    name: str = Field(pattern=NAME_RE, max_length=64)
    underlay: ipaddress.IPv4Address | ipaddress.IPv6Address | None = Field(
        None, description="the address cross-host links use (default: the worker's address)"
    )


class PerDirection(Strict):
    """An impairment per direction: a_to_b from the first endpoint to the second, b_to_a back
    (on a bridge: a_to_b is from each node into the bridge)."""

    a_to_b: Netem = Field(default_factory=Netem)
    b_to_a: Netem = Field(default_factory=Netem)


def _impair_form(value: Any) -> str:
    if isinstance(value, dict):
        return "per-direction" if set(DIRECTIONS) & set(value) else "both"
    return "per-direction" if isinstance(value, PerDirection) else "both"


# the tags show in pydantic's error paths; the loader leaves them out (links[0].impair.delay)
IMPAIR_FORMS = ("both", "per-direction")
ImpairSpec = Annotated[
    Annotated[Netem, Tag("both")] | Annotated[PerDirection, Tag("per-direction")],
    Discriminator(_impair_form),
]


class LinkModel(Strict):
    """The fields every link has; a link type's model (links/) adds its own and narrows `type`."""

    type: str
    endpoints: list[EndpointSpec]
    name: str | None = Field(None, description="a name to refer to the link by (lab.link(name))")
    mtu: int | None = Field(None, ge=68, le=65535, description="default MTU of every end")
    workers: Literal["threads", "processes"] = Field(
        "processes", description="relay workers (a tun-pair's, or one inserted for an impairment)"
    )
    impair: ImpairSpec | None = Field(
        None,
        description="netem-style impairment: one mapping for both directions, or a_to_b / b_to_a",
    )
    impair_via: Literal["auto", "kernel", "relay"] = Field(
        "auto",
        description="kernel qdiscs (netem/tbf) or a relay; auto takes the kernel where it can",
    )
    transport: Literal["udp", "vxlan"] = Field(
        "udp",
        description="how the link crosses between two hosts of a cluster: udp (a relay over UDP) "
        "or vxlan (kernel vxlan); not used when both ends are on one host",
    )

    @property
    def impairment(self) -> LinkImpairment | None:
        """The impairment per direction (a symmetric one with a seed: b_to_a gets seed + 1)."""
        if self.impair is None:
            return None
        if isinstance(self.impair, PerDirection):
            return LinkImpairment(a_to_b=self.impair.a_to_b, b_to_a=self.impair.b_to_a)
        return self.both_ways(self.impair)

    @classmethod
    def both_ways(cls, netem: Netem) -> LinkImpairment:
        """What one impairment given for both directions means on this type of link."""
        return LinkImpairment.symmetric(netem)


class TopologyShape(Protocol):
    """What the parts below models.py (the catalog, the runtime, link types) read of a topology:
    its nodes and links. models.Topology is one; the protocol keeps them from importing it."""

    @property
    def name(self) -> str: ...

    @property
    def nodes(self) -> Mapping[str, NodeBase]: ...

    @property
    def links(self) -> Sequence[LinkModel]: ...

    def resolved_nodes(self) -> dict[str, NodeBase]:
        """Nodes with the defaults applied."""
        ...
