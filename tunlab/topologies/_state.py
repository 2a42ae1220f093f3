"""Ownership records and liveness: what each lab made, and whether its holder still lives.

Every lab has a record in the machine-wide owners directory (/run/tunlab/owners), written
before anything is created and listing every object it will make, and a lock file there that
its holder keeps locked (flock) for as long as it lives. The kernel drops the lock the moment
the holder dies — SIGKILL included, and before a zombie is reaped — so "is this lab alive?"
is answered by the lock, not by a pid or a name. `tunlab gc` removes only what the record of a
lab whose lock is free lists, whichever run directory, user or test worker started it.
The per-run-directory state file (TUNLAB_RUN_DIR, default /run/tunlab/labs) carries the lab's
name for `ls`, `inspect`, `exec` and `down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab._linux.netns import NETNS_RUN_DIR, list_named_netns

NS_PREFIX = "tl-"
OWNED_NS_RE = re.compile(r"^tl-([0-9a-f]{6})[-.]")


def run_dir() -> Path:
    return Path(os.environ.get("TUNLAB_RUN_DIR", "/run/tunlab"))


def labs_dir() -> Path:
    return run_dir() / "labs"


def owners_dir() -> Path:
    """Machine-wide: every lab's record and lock, whatever TUNLAB_RUN_DIR says."""
    return Path(os.environ.get("TUNLAB_OWNERS_DIR", "/run/tunlab/owners"))


def lab_id_of(namespace: str) -> str | None:
    """The lab id in the name of a namespace tunlab made (tl-<id>-node, tl-<id>.bridge), else None."""
    m = OWNED_NS_RE.match(namespace)
    return m.group(1) if m else None


def new_lab_id() -> str:
    """A short id that no lab record and no namespace on this machine uses yet."""
    taken = {lab_id_of(n) for n in list_named_netns()}
    while True:
        lab_id = secrets.token_hex(3)
        if lab_id not in taken and not (owners_dir() / f"{lab_id}.lock").exists():
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


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process ('Z' for a zombie), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int, start: str | None) -> bool:
    """The process with this pid and start time runs (a zombie is dead)."""
    return pid > 0 and start is not None and process_start(pid) == start and process_state(pid) != "Z"


# ---- the holder's lock ----------------------------------------------------------------------------
_held: dict[str, int] = {}  # lab id -> the locked fd this process keeps


def _mkdirs() -> None:
    owners_dir().mkdir(parents=True, exist_ok=True, mode=0o755)


def adopt_claim(lab_id: str, fd: int) -> None:
    """Hold lab_id by a lock fd another holder handed over (the same open file: its lock is
    already held, and stays held for as long as this process keeps the fd)."""
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op that proves it
    _held[lab_id] = fd


def release_claim_fd(lab_id: str) -> int | None:
    """Stop tracking lab_id's lock here and return its fd (to hand over, then close)."""
    return _held.pop(lab_id, None)


def claim(lab_id: str) -> None:
    """Become the holder of lab_id: lock its lock file for as long as this process lives."""
    import fcntl

    _mkdirs()
    fd = os.open(owners_dir() / f"{lab_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RuntimeError(f"lab id {lab_id} is held by another process") from None
    _held[lab_id] = fd


def release(lab_id: str) -> None:
    fd = _held.pop(lab_id, None)
    if fd is not None:
        os.close(fd)


def holder_alive(lab_id: str) -> bool:
    """Some live process holds this lab (its lock is taken); False once the holder died."""
    import fcntl

    if lab_id in _held:
        return True
    try:
        fd = os.open(owners_dir() / f"{lab_id}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_SAVE_LOCK = threading.Lock()


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
    impairments: dict[str, dict[str, Any]] = field(default_factory=dict)  # {link index: via, reason, tc}
    health: dict[str, str] = field(default_factory=dict)  # {dead part: cause}; status is then degraded
    state_path: str = ""  # the run-directory state file (so gc can remove it from anywhere)

    @property
    def path(self) -> Path:
        return Path(self.state_path) if self.state_path else _state_path(self.name)

    @property
    def record_path(self) -> Path:
        return owners_dir() / f"{self.id}.json"

    def save(self) -> None:
        """Write the record (machine-wide) and the state file (run directory), each atomically."""
        if not self.state_path:
            self.state_path = str(_state_path(self.name))
        labs_dir().mkdir(parents=True, exist_ok=True, mode=0o755)
        _mkdirs()
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        with _SAVE_LOCK:  # the holder's health thread saves too
            for path in (self.record_path, self.path):
                _write_json(path, data)

    def remove(self) -> None:
        """Forget the lab: its state file, log, record and lock file."""
        for path in (
            self.path,
            self.path.with_suffix(".log"),
            self.path.with_suffix(".sock"),
            self.record_path,
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (owners_dir() / f"{self.id}.lock").unlink()
        release(self.id)

    @property
    def relay_pids(self) -> list[int]:
        """Process ids of the lab's relay workers."""
        return [int(pid) for pid, _start in self.relay_workers]

    @property
    def owner_alive(self) -> bool:
        """The holder lives: it keeps the lab's lock (a killed holder, even a zombie, does not)."""
        return holder_alive(self.id)

    @classmethod
    def from_data(cls, data: Any) -> LabState:
        """A state from parsed JSON; ValueError saying what is wrong when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ValueError(f"fields missing ({exc})") from None

    @classmethod
    def load(cls, name: str) -> LabState | None:
        """The state of the lab of that name in this run directory (None: none, or unreadable)."""
        try:
            return read_state(_state_path(name))
        except (OSError, ValueError):
            return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:  # dumps: the C encoder (json.dump streams through Python's)
        f.write(json.dumps(data, separators=(",", ":"), default=str))
    os.replace(tmp, path)


def read_state(path: Path) -> LabState:
    """Read a state file or record; OSError when gone, ValueError when corrupt or truncated."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt or truncated ({exc})") from None
    try:
        return LabState.from_data(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _state_path(name: str) -> Path:
    return labs_dir() / f"{name}.json"


def all_labs() -> list[LabState]:
    """The labs of this run directory whose state files can be read."""
    return [s for s in scan_labs() if isinstance(s, LabState)]


@dataclass(frozen=True)
class BrokenState:
    """A state file or record that cannot be read: where, and why."""

    path: Path
    reason: str
    lab_id: str | None = None


def scan_labs() -> list[LabState | BrokenState]:
    """Every state file of this run directory, read or reported broken."""
    out: list[LabState | BrokenState] = []
    if labs_dir().is_dir():
        for path in sorted(labs_dir().glob("*.json")):
            try:
                out.append(read_state(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                out.append(BrokenState(path, str(exc)))
    return out


def all_records() -> list[LabState | BrokenState]:
    """Every lab record on this machine (any run directory), read or reported broken."""
    out: list[LabState | BrokenState] = []
    ids: set[str] = set()
    if owners_dir().is_dir():
        for path in sorted(owners_dir().glob("*.json")):
            ids.add(path.stem)
            try:
                out.append(read_state(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                out.append(BrokenState(path, str(exc), path.stem))
        for path in sorted(owners_dir().glob("*.lock")):  # a lock whose record never got written
            if path.stem not in ids:
                out.append(BrokenState(path, "a lab lock without its record", path.stem))
    return out


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise lab creation and removal between processes, machine-wide."""
    import fcntl

    _mkdirs()
    fd = os.open(owners_dir() / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def owned_namespaces(lab_id: str | None = None) -> list[str]:
    """Namespaces under /run/netns named for tunlab labs (for one lab, or all)."""
    out = []
    for name in list_named_netns(NETNS_RUN_DIR):
        owner = lab_id_of(name)
        if owner is not None and (lab_id is None or owner == lab_id):
            out.append(name)
    return out
