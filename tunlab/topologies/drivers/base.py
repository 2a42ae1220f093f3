"""The node-driver interface: a node is something with a network namespace we can enter."""

from __future__ import annotations

import abc
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tunlab.errors import LabError
from tunlab.linux.netns import NetNamespace

if TYPE_CHECKING:
    from tunlab.topologies.models import Node


@dataclass(frozen=True)
class ExecResult:
    """What a command in a node did."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


class NodeHandle:
    """A running node: its namespace, and how to run programs and open sockets in it."""

    def __init__(self, name: str, kind: str, netns: NetNamespace, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.netns = netns
        self.env = dict(env or {})

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside the node (argv list; no shell)."""
        kwargs["env"] = self._env(kwargs.get("env"))
        return self.netns.popen(argv, **kwargs)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run argv to completion inside the node; returns (code, stdout, stderr)."""
        done = self.netns.run(argv, timeout=timeout, input=input, env=self._env(env))
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket opened inside the node's namespace (usable from any thread)."""
        return self.netns.socket(family, type, proto)

    def __repr__(self) -> str:
        return f"<{self.kind} node {self.name!r}>"


class NodeDriver(abc.ABC):
    """Creates and removes nodes of one kind."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def create(self, lab_id: str, name: str, node: Node) -> NodeHandle: ...

    @abc.abstractmethod
    def destroy(self, handle: NodeHandle) -> None: ...

    def check_available(self) -> None:  # noqa: B027 (optional hook: most kinds are always there)
        """Raise LabError, saying what is missing, when nodes of this kind cannot be made here."""


class UnavailableDriver(NodeDriver):
    """A kind accepted by the schema whose driver has not landed yet."""

    def __init__(self, kind: str, why: str) -> None:
        self.kind = kind  # type: ignore[misc]
        self.why = why

    def check_available(self) -> None:
        raise LabError(f"kind: {self.kind} is not available yet: {self.why}")

    def create(self, lab_id: str, name: str, node: Node) -> NodeHandle:
        self.check_available()
        raise AssertionError  # unreachable

    def destroy(self, handle: NodeHandle) -> None:
        return None


def driver_for(kind: str) -> NodeDriver:
    from tunlab.topologies.drivers.netns import NetnsDriver

    if kind == "netns":
        return NetnsDriver()
    if kind == "container":
        from tunlab.topologies.drivers.container import ContainerDriver

        return ContainerDriver()
    if kind == "vm":
        return UnavailableDriver("vm", "qemu nodes need their driver (not in this release)")
    raise LabError(f"unknown node kind {kind!r}")
