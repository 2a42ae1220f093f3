"""cgroup v2 groups for lab nodes: everything started in a node lives in its group, so teardown
ends all of it — a daemon that forked away, a setsid, a process that ignores SIGTERM.

The groups are <cgroup2 mount>/tunlab/<lab id>/<node>, with no controllers (membership and
cgroup.kill need none). cgroup2 is found where it is mounted (/sys/fs/cgroup, or the hybrid
/sys/fs/cgroup/unified); where there is none, or it is not writable, `root()` is None and
callers fall back to finding a node's processes by their network namespace.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from pathlib import Path

BASE = "tunlab"
DEFAULT_GRACE = 2.0  # seconds between SIGTERM and cgroup.kill


@functools.cache
def root() -> Path | None:
    """The cgroup2 mount point this process can create groups under, or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        mount_point = Path(left.split()[4])
        if os.access(mount_point, os.W_OK) and (mount_point / "cgroup.procs").exists():
            return mount_point
    return None


def lab_group(lab_id: str) -> Path | None:
    """The lab's group (its nodes' groups are below it), or None without cgroup v2."""
    base = root()
    return None if base is None else base / BASE / lab_id


def node_group(lab_id: str, node: str) -> Path | None:
    group = lab_group(lab_id)
    return None if group is None else group / node


def create(group: Path) -> None:
    """Make the group (and its parents); one that exists is reused."""
    group.mkdir(mode=0o755, parents=True, exist_ok=True)


def members(group: Path) -> list[int]:
    """The pids in the group (none when it is gone)."""
    try:
        text = (group / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def populated(group: Path) -> bool:
    """Some process (of this group or one below) is still alive."""
    try:
        text = (group / "cgroup.events").read_text()
    except OSError:
        return False
    return "populated 1" in text


def open_procs(group: Path) -> int:
    """An fd of the group's cgroup.procs, opened here: a process inside a node's mount
    namespace (which has its own /sys) joins the group through it."""
    return os.open(group / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def join_argv(procs_fd: int, argv: list[str]) -> list[str]:
    """argv started so that it is in the group before it runs: a shell writes its own pid to
    the group's cgroup.procs (through procs_fd, which must be passed to it) and then execs
    argv (same pid; whatever it starts is born in the group), or says "NAME: command not
    found" and exits 127 as a shell does. The script is fixed: argv reaches it as arguments,
    never as shell text."""
    script = (
        'echo $$ > "/proc/self/fd/$0" 2>/dev/null '
        '|| { echo "tunlab: cannot join the node\'s cgroup" >&2; exit 126; }; '
        'command -v -- "$1" >/dev/null 2>&1 || { echo "$1: command not found" >&2; exit 127; }; '
        'exec "$@"'
    )
    return ["/bin/sh", "-c", script, str(procs_fd), *argv]


def _wait_empty(groups: list[Path], timeout: float) -> list[Path]:
    """Wait until every group is empty or timeout passes; the groups still populated."""
    deadline = time.monotonic() + timeout
    busy = [g for g in groups if populated(g)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.01)
        busy = [g for g in busy if populated(g)]
    return busy


def _tree(group: Path) -> list[Path]:
    """group and every group below it, children before their parents."""
    try:
        children = [p for p in group.iterdir() if p.is_dir()]
    except OSError:
        return []
    return [g for child in children for g in _tree(child)] + [group]


def end(group: Path, grace: float = DEFAULT_GRACE) -> list[str]:
    """End every process in the group — SIGTERM, up to `grace` seconds, then cgroup.kill —
    and remove it (its children first); returns the problems met."""
    return end_many({group: grace})


def end_many(groups: dict[Path, float]) -> list[str]:
    """end() for several groups (each with its grace) at once: a lab of many nodes whose
    daemons ignore SIGTERM waits its longest grace once, not once per node."""
    tree = {g: grace for group, grace in groups.items() for g in _tree(group)}
    start = time.monotonic()
    pending = {g: start + grace for g, grace in tree.items() if populated(g)}
    for group in pending:
        for pid in members(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    killed: list[Path] = []
    while pending:
        now = time.monotonic()
        for group, deadline in list(pending.items()):
            if not populated(group):
                del pending[group]
            elif now >= deadline:
                with contextlib.suppress(OSError):
                    (group / "cgroup.kill").write_text("1")
                killed.append(group)
                del pending[group]
        if pending:
            time.sleep(0.01)
    problems = [
        f"cgroup {group}: processes {members(group)} did not end" for group in _wait_empty(killed, 5.0)
    ]
    for group in tree:
        problems += _remove(group)
    return problems


def _remove(group: Path) -> list[str]:
    """rmdir an emptied group (the kernel may take a moment to let go of the last process)."""
    for attempt in range(50):
        try:
            group.rmdir()
            return []
        except FileNotFoundError:
            return []
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 49:
                return [f"cgroup {group}: {exc.strerror}"]
            time.sleep(0.01)
    return []


def remove_lab(lab_id: str, grace: float = DEFAULT_GRACE) -> list[str]:
    """End and remove a lab's group and every node group below it."""
    group = lab_group(lab_id)
    if group is None:
        return []
    return end(group, grace)
