"""Processes as /proc shows them: what `tunlab ps` lists, and the second sweep of a node's
teardown (every process whose network namespace is the node's, whatever cgroup it is in)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessInfo:
    """One process: pid, command line, state letter, CPU seconds (user + system), resident bytes."""

    pid: int
    argv: tuple[str, ...]
    state: str
    cpu_seconds: float
    rss_bytes: int

    @property
    def command(self) -> str:
        """The command line as one string (for display)."""
        return " ".join(self.argv)


def info(pid: int) -> ProcessInfo | None:
    """What /proc says of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        with open(f"/proc/{pid}/statm") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    name, _, rest = stat.rpartition(")")
    fields = rest.split()
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    if not argv:  # a kernel thread or a zombie: the name in parentheses
        argv = (f"[{name.partition('(')[2]}]",)
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return ProcessInfo(pid, argv, fields[0], cpu, resident * _PAGE)


def netns_inode(pid: int) -> int | None:
    """The inode of a process's network namespace (None once it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def in_netns(inode: int) -> list[int]:
    """Every process whose network namespace has this inode."""
    return by_netns({inode}).get(inode, [])


def by_netns(inodes: set[int]) -> dict[int, list[int]]:
    """The processes in each of these network namespaces (by inode), from one pass over /proc."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            inode = netns_inode(int(entry))
            if inode in inodes:
                out.setdefault(inode, []).append(int(entry))
    return out


def end(pids: Iterable[int], grace: float = 2.0) -> list[int]:
    """SIGTERM, up to `grace` seconds, then SIGKILL; the pids that outlived both."""
    alive = [p for p in pids if p != os.getpid()]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if _running(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if _running(p)]
    return alive


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie is done: its parent only has not reaped it yet)."""
    found = info(pid)
    return found is not None and found.state != "Z"
