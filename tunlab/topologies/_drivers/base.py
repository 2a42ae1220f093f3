"""The node-driver interface: what every kind of node (netns, container, vm) must offer.

A driver creates nodes of its kind (several at once where that is faster), waits until they
are ready, runs commands in them, names the resources it made (for the state file) and knows
how to reap them after its holder died (down, gc). The engine, the lab, the CLI and gc talk
to drivers only; this module imports no implementation (the registry is in __init__).
"""

from __future__ import annotations

import abc
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tunlab._linux import cgroups, procs
from tunlab._linux.netns import NetNamespace
from tunlab._linux.procs import ProcessInfo
from tunlab.errors import LabError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tunlab._linux.nodens import NodeSpaces
    from tunlab.topologies._fields import NodeBase

# (field path below the node, message) for problems `validate` reports
NodeIssue = tuple[tuple[Any, ...], str]
Resources = dict[str, Any]


@dataclass(frozen=True)
class ExecResult:
    """What a command in a node did."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        """The command exited 0."""
        return self.code == 0

    @property
    def text(self) -> str:
        """stdout as text (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")


@dataclass(frozen=True)
class LabContext:
    """Who is creating nodes: the lab's id and name (for names, labels and ownership), and the
    (address, node) pairs every node's /etc/hosts lists."""

    lab_id: str
    lab_name: str
    hosts: tuple[tuple[str, str], ...] = ()

    def hosts_file(self, node: str) -> str:
        """/etc/hosts as node sees it: loopback, itself as 127.0.1.1, then every other node's
        first address on each of its links."""
        from tunlab._linux.nodens import hosts_text  # Linux-only module (fcntl): imported on use

        return hosts_text(self.hosts, node)


class NodeHandle:
    """A running node: where its interfaces are wired, and how to run programs and open sockets.

    netns is the namespace the lab wires the node's link ends into: the node's own for netns
    and container nodes; for a node whose interfaces live in a guest kernel (a VM) it is a
    host-side namespace holding the TAP devices, and the driver configures the guest itself.
    """

    #: its network stack is a guest kernel's: no sockets or popen from the host, run() only
    in_guest: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        kind: str,
        netns: NetNamespace,
        env: dict[str, str] | None = None,
        spaces: NodeSpaces | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.netns = netns
        self.env = dict(env or {})
        self.spaces = spaces  # its own mount/UTS namespaces and cgroup (netns nodes)
        self.group: Path | None = spaces.group if spaces is not None else None  # its cgroup
        self.stop_grace = 2.0  # seconds its processes get between SIGTERM and SIGKILL

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside the node (argv list; no shell); it and what it starts stay the
        node's until the node goes down."""
        if not isinstance(argv, (str, bytes)) and not argv:
            raise ValueError("argv is empty: give a program and its arguments")
        kwargs["env"] = self._env(kwargs.get("env"))
        if self.spaces is not None:
            return self.spaces.popen(argv, **kwargs)
        return self.netns.popen(argv, **kwargs)

    def interactive(self, argv: Sequence[str]) -> subprocess.Popen[Any]:
        """Start argv inside the node with this terminal's stdin/stdout/stderr (`tunlab exec`)."""
        return self.popen(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run argv to completion inside the node; returns (code, stdout, stderr)."""
        if not isinstance(argv, (str, bytes)) and not argv:
            raise ValueError("argv is empty: give a program and its arguments")
        runner = self.spaces if self.spaces is not None else self.netns
        done = runner.run(argv, timeout=timeout, input=input, env=self._env(env))
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def processes(self) -> list[ProcessInfo]:
        """Everything running in the node: its cgroup's members, and any other process in its
        network namespace (started by `ip netns exec`, say)."""
        pids: set[int] = set()
        if self.group is not None:
            pids.update(cgroups.members(self.group))
        pids.update(procs.in_netns(self.netns.inode[1]))
        found = [procs.info(pid) for pid in sorted(pids)]
        return [p for p in found if p is not None and p.state != "Z"]

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket opened inside the node's namespace (usable from any thread)."""
        return self.netns.socket(family, type, proto)

    def logs(self, tail: int = 200) -> str:
        """The node's own output (containers: their log), for log-line readiness checks."""
        raise LabError(f"node '{self.name}' ({self.kind}) has no log to read")

    def __repr__(self) -> str:
        return f"<{self.kind} node {self.name!r}>"


class NodeDriver(abc.ABC):
    """Creates, waits for, enters and removes nodes of one kind."""

    kind: ClassVar[str]
    #: the pydantic model of this kind's nodes (a NodeBase subclass with `kind: Literal[...]`)
    model: ClassVar[type[NodeBase]]
    #: the fields only this kind has, which `defaults:` may give too (None: it has none)
    fields: ClassVar[type[BaseModel] | None] = None
    #: its place in lists (messages, the schema); the first is the default kind
    rank: ClassVar[int] = 50
    #: create all nodes of this kind in one step (in parallel), not one step per node
    parallel: ClassVar[bool] = False
    #: the node's interfaces live in a guest kernel: the driver configures them (not netlink)
    interfaces_in_guest: ClassVar[bool] = False

    def check(self, node: NodeBase) -> list[NodeIssue]:
        """Problems of a node's fields that only this kind knows (for `validate`)."""
        return []

    def memory(self, node: NodeBase) -> int | None:
        """MiB of a host's RAM the node takes, when that is what limits where it can run (a
        cluster balances such nodes by it); None for nodes that take little."""
        return None

    def check_available(self) -> None:  # noqa: B027 (optional hook: most kinds are always there)
        """Raise LabError, saying what is missing, when nodes of this kind cannot be made here."""

    def planned(self, ctx: LabContext, name: str, node: NodeBase) -> Resources:
        """What creating this node will make, recorded in the state file *before* it is made."""
        return {}

    @abc.abstractmethod
    def create(self, ctx: LabContext, name: str, node: NodeBase) -> NodeHandle: ...

    def create_many(self, ctx: LabContext, nodes: dict[str, NodeBase]) -> dict[str, NodeHandle]:
        """Create several nodes; on any failure remove those that were made, then raise."""
        made: dict[str, NodeHandle] = {}
        try:
            for name, node in nodes.items():
                made[name] = self.create(ctx, name, node)
        except BaseException:
            for handle in made.values():
                try:
                    self.destroy(handle)
                except Exception:  # noqa: S110 (the first failure is the one to report)
                    pass
            raise
        return made

    def wait_ready(self, handle: NodeHandle, node: NodeBase) -> None:
        """Until the node's healthcheck passes (composable wait strategies); LabError on timeout."""
        from tunlab.topologies._drivers.waits import wait_for_healthcheck

        if node.healthcheck is not None:
            wait_for_healthcheck(handle, node.healthcheck)

    def start_many(self, handles: dict[str, NodeHandle], say: Any = None) -> None:  # noqa: B027 - optional
        """Kinds whose interfaces live in a guest: start the nodes once their links exist."""

    def configure(self, handle: NodeHandle, ifaces: list[Any], node: NodeBase) -> None:
        """Kinds whose interfaces live in a guest: addresses, routes and sysctls, inside it."""
        raise LabError(f"kind: {self.kind} nodes are configured by netlink, not by their driver")

    def resources(self, handle: NodeHandle) -> Resources:
        """What this running node holds, recorded in the state file once it is up."""
        return {}

    def failure(self, handle: NodeHandle) -> str | None:
        """Why this running node no longer works, or None (the holder asks a few times a
        second). By default: its named network namespace was deleted from outside."""
        netns = handle.netns
        if netns.name is not None and not os.path.exists(netns.path):
            return f"its network namespace {netns.path} was deleted from outside the lab"
        return None

    @abc.abstractmethod
    def destroy(self, handle: NodeHandle) -> None:
        """Remove a node this process made (Lab.down, rollback)."""

    def destroy_many(self, handles: list[NodeHandle]) -> list[str]:
        """destroy() each (kinds that can tear several down faster at once override it); the
        problems met, every node attempted."""
        problems: list[str] = []
        for handle in handles:
            try:
                self.destroy(handle)
            except Exception as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
        return problems

    @abc.abstractmethod
    def reap(self, ctx: LabContext, name: str, resources: Resources) -> list[str]:
        """Remove what a dead holder's node left (from its state record); problems met."""

    def attach(self, ctx: LabContext, name: str, resources: Resources, env: dict[str, str]) -> NodeHandle:
        """A handle on a node another process holds (`tunlab exec`), from its state record."""
        raise LabError(f"kind: {self.kind} nodes cannot be entered from another process")

    def inspect_extra(self, lab_name: str, name: str, resources: Resources) -> dict[str, Any]:
        """What `inspect` shows of this kind beyond the node's namespace (from its state record,
        asking the lab's holder where it must); {} for kinds that have nothing more."""
        return {}

    def reap_lab(self, ctx: LabContext) -> list[str]:
        """Remove every object of this kind that carries a dead lab's id (its record is lost)."""
        return []
