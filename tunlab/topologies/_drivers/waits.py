"""Composable readiness checks: a node is ready when every strategy says so, or the wait fails.

The model is testcontainers' wait strategies: a command succeeds, a file appears, a TCP port
accepts connections, a log line is seen. They work on any node handle (netns, container, and
the VM driver's guest handle), because they only use the handle's run/socket/logs.
"""

from __future__ import annotations

import abc
import re
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tunlab.errors import LabError

if TYPE_CHECKING:
    from tunlab.topologies._fields import Healthcheck


class NodeHandle(Protocol):
    """What the checks use of a node: run a command, open a socket, read its log."""

    name: str

    def run(self, argv: Sequence[str], *, timeout: float | None = ...) -> Any: ...

    def socket(self, family: int = ..., type: int = ..., proto: int = ...) -> socket.socket: ...

    def logs(self, tail: int = ...) -> str: ...


class WaitStrategy(abc.ABC):
    """One condition a node must meet."""

    @abc.abstractmethod
    def check(self, handle: NodeHandle, timeout: float) -> str | None:
        """None when met; else why not yet (shown when the wait times out)."""


class CommandSucceeds(WaitStrategy):
    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)

    def check(self, handle: NodeHandle, timeout: float) -> str | None:
        try:
            done = handle.run(self.argv, timeout=max(1.0, timeout))
        except FileNotFoundError:
            return f"{self.argv[0]!r} is not a command in the node"
        except Exception as exc:
            return f"{self.argv} failed: {exc}"
        if done.code == 0:
            return None
        detail = done.stderr.decode(errors="replace").strip()[-200:]
        return f"{self.argv} kept failing {detail}".strip()


class FileExists(WaitStrategy):
    def __init__(self, path: str) -> None:
        self.path = path

    def check(self, handle: NodeHandle, timeout: float) -> str | None:
        try:
            done = handle.run(["test", "-e", self.path], timeout=max(1.0, timeout))
        except Exception as exc:
            return f"cannot look for {self.path}: {exc}"
        return None if done.code == 0 else f"file {self.path} did not appear"


class PortOpen(WaitStrategy):
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host

    def check(self, handle: NodeHandle, timeout: float) -> str | None:
        try:
            with handle.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(min(1.0, timeout))
                s.connect((self.host, self.port))
        except OSError as exc:
            return f"TCP port {self.port} does not accept connections ({exc.strerror or exc})"
        return None


class LogLine(WaitStrategy):
    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)

    def check(self, handle: NodeHandle, timeout: float) -> str | None:
        return None if self.regex.search(handle.logs()) else f"no log line matches {self.regex.pattern!r}"


def strategies(check: Healthcheck) -> list[WaitStrategy]:
    """The strategies a healthcheck stands for (all of them must pass)."""
    out: list[WaitStrategy] = []
    if check.command:
        out.append(CommandSucceeds(check.command))
    if check.file:
        out.append(FileExists(check.file))
    if check.port:
        out.append(PortOpen(check.port))
    if check.log:
        out.append(LogLine(check.log))
    return out


def wait_until(
    handle: NodeHandle, waits: Sequence[WaitStrategy], *, timeout: float, interval: float = 0.2
) -> None:
    """Poll every strategy until all are met; LabError with the last reason after timeout."""
    deadline = time.monotonic() + timeout
    pending = list(waits)
    reason = "not checked"
    while True:
        left = deadline - time.monotonic()
        still = []
        for wait in pending:
            why = wait.check(handle, max(left, 0.1))
            if why is not None:
                reason = why
                still.append(wait)
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise LabError(f"node '{handle.name}' is not ready after {timeout:g} s: {reason}")
        time.sleep(interval)


def wait_for_healthcheck(handle: NodeHandle, check: Healthcheck) -> None:
    wait_until(handle, strategies(check), timeout=check.timeout, interval=check.interval)
