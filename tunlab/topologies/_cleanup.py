"""Removing what labs left: a dead holder's lab by its ownership record (`tunlab gc`), or a
lab whose holder is gone by `tunlab down`. Only what a record lists is touched."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunlab._linux import cgroups, nodens
from tunlab.errors import LabError
from tunlab.topologies._drivers import all_drivers, driver_of_record
from tunlab.topologies._drivers.base import LabContext
from tunlab.topologies._drivers.netns import remove_namespace
from tunlab.topologies._state import (
    BrokenState,
    LabState,
    all_records,
    holder_alive,
    owned_namespaces,
    owners_dir,
    process_start,
    registry_lock,
    run_dir,
    scan_labs,
)

__all__ = ["garbage_collect", "remove_lab_leftovers", "remove_namespaces", "teardown_state"]


def remove_lab_leftovers(lab_id: str, hold_dirs: Iterable[str] = ()) -> list[str]:
    """The lab's cgroup (whatever its nodes left in it ends) and the directories that held its
    nodes' namespaces; problems met."""
    problems = cgroups.remove_lab(lab_id)
    for lab_dir in {run_dir() / "nodes" / lab_id, *(Path(h).parent for h in hold_dirs)}:
        problems += nodens.release_lab_dir(lab_dir)
    return problems


def remove_namespaces(names: Iterable[str]) -> list[str]:
    """Delete these namespaces (one already gone is fine); returns the failures."""
    return [p for p in (remove_namespace(name) for name in names) if p]


def _kill_relays(workers: list[list[Any]]) -> None:
    """SIGKILL a dead lab's relay workers: only a process with the recorded start time running
    tunlab's worker script (a reused pid is someone else's)."""
    from tunlab.relay._relay import WORKER

    for pid, start in workers:
        if process_start(pid) != start:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if WORKER.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def teardown_state(state: LabState) -> list[str]:
    """Remove what a lab's record says it made (its holder is gone); returns problems."""
    problems: list[str] = []
    _kill_relays(state.relay_workers)
    ctx = LabContext(state.id, state.name)
    for name, record in state.nodes.items():
        try:
            problems += driver_of_record(record).reap(ctx, name, record)
        except LabError as exc:
            problems.append(f"node {name}: {exc}")
    problems += remove_namespaces(sorted(set(state.namespaces) | set(owned_namespaces(state.id))))
    holds = [str(r["hold"]) for r in state.nodes.values() if isinstance(r, dict) and r.get("hold")]
    problems += remove_lab_leftovers(state.id, holds)
    state.remove()
    return problems


def _teardown_id(lab_id: str) -> list[str]:
    """A dead lab whose record is unreadable: remove what carries its (registered) id."""
    problems: list[str] = []
    ctx = LabContext(lab_id, lab_id)
    for driver in all_drivers():
        problems += driver.reap_lab(ctx)
    problems += remove_namespaces(owned_namespaces(lab_id))
    problems += remove_lab_leftovers(lab_id)
    for suffix in (".json", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            (owners_dir() / f"{lab_id}{suffix}").unlink()
    return problems


def garbage_collect() -> list[str]:
    """`tunlab gc`: remove every lab (any run directory) whose holder died, and nothing else.

    A lab is dead when nobody holds its lock (SIGKILL and zombies included); what is removed is
    what its record lists. Objects that merely look like tunlab's are left alone.
    """
    removed: list[str] = []
    with registry_lock():
        for entry in all_records():
            if isinstance(entry, LabState):
                if entry.owner_alive:
                    continue
                problems = teardown_state(entry)
                removed.append(f"lab {entry.name} (id {entry.id}, holder pid {entry.owner_pid} is gone)")
                removed += [f"  problem: {p}" for p in problems]
            elif entry.lab_id is not None and not holder_alive(entry.lab_id):
                _teardown_id(entry.lab_id)
                removed.append(f"lab id {entry.lab_id} ({entry.reason}): removed what carries its id")
        for broken in scan_labs():  # state files of this run directory nobody can read
            if isinstance(broken, BrokenState):
                with contextlib.suppress(FileNotFoundError):
                    broken.path.unlink()
                removed.append(f"unreadable state file {broken.path} ({broken.reason})")
    return removed
