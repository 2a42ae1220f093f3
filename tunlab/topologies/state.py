"""Ownership records: one state file per running lab under /run/tunlab, and liveness checks.

The state file is written before anything is created and lists every object the lab will
make, so `tunlab down` and `tunlab gc` remove exactly what tunlab made, even after SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab.linux.netns import NETNS_RUN_DIR, list_named_netns

NS_PREFIX = "tl-"
OWNED_NS_RE = re.compile(r"^tl-([0-9a-f]{6})[-.]")


def run_dir() -> Path:
    return Path(os.environ.get("TUNLAB_RUN_DIR", "/run/tunlab"))


def labs_dir() -> Path:
    return run_dir() / "labs"


def lab_id_of(namespace: str) -> str | None:
    """The lab id in the name of a namespace tunlab made (tl-<id>-node, tl-<id>.bridge), else None."""
    m = OWNED_NS_RE.match(namespace)
    return m.group(1) if m else None


def new_lab_id() -> str:
    """A short id that no namespace on this machine uses yet."""
    taken = {lab_id_of(n) for n in list_named_netns()}
    while True:
        lab_id = secrets.token_hex(3)
        if lab_id not in taken:
            return lab_id


def ns_name(lab_id: str, node: str) -> str:
    return f"{NS_PREFIX}{lab_id}-{node}"


def bridge_ns_name(lab_id: str, bridge: str) -> str:
    return f"{NS_PREFIX}{lab_id}.{bridge}"


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (tells a live owner from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, start: str | None) -> bool:
    return pid > 0 and start is not None and process_start(pid) == start


@dataclass
class LabState:
    """What a running lab is, who holds it, and what it made."""

    name: str
    id: str
    owner_pid: int
    owner_start: str | None
    topology: dict[str, Any]
    source: str | None = None
    status: str = "deploying"
    detached: bool = False
    created_at: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    relay_workers: list[list[Any]] = field(default_factory=list)  # [pid, start time]
    offload_original: dict[str, dict[str, bool]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # {node: {kind, driver's record}}

    @property
    def path(self) -> Path:
        return _state_path(self.name)

    def save(self) -> None:
        labs_dir().mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"), default=str)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (labs_dir() / f"{self.name}.log").unlink()

    @property
    def relay_pids(self) -> list[int]:
        """Process ids of the lab's relay workers."""
        return [int(pid) for pid, _start in self.relay_workers]

    @property
    def owner_alive(self) -> bool:
        return alive(self.owner_pid, self.owner_start)

    @classmethod
    def load(cls, name: str) -> LabState | None:
        try:
            data = json.loads(_state_path(name).read_text())
        except (OSError, ValueError):  # gone, or half-written by a process that died
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _state_path(name: str) -> Path:
    return labs_dir() / f"{name}.json"


def all_labs() -> list[LabState]:
    out = []
    if labs_dir().is_dir():
        for path in sorted(labs_dir().glob("*.json")):
            state = LabState.load(path.stem)
            if state is not None:
                out.append(state)
    return out


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise lab creation and removal between processes (name checks, state files)."""
    import fcntl

    run_dir().mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(run_dir() / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def owned_namespaces(lab_id: str | None = None) -> list[str]:
    """Namespaces under /run/netns that tunlab made (for one lab, or all)."""
    out = []
    for name in list_named_netns(NETNS_RUN_DIR):
        owner = lab_id_of(name)
        if owner is not None and (lab_id is None or owner == lab_id):
            out.append(name)
    return out
