"""The holder notices a dead part of its lab: a relay worker, a VM's qemu, a container, a node's
network namespace deleted from outside. It checks every part a few times a second and records
each death (with its cause) in the lab's state, which turns the lab `degraded` for `ls` and
`inspect`; live operations on a dead part then fail naming it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

INTERVAL = 0.25  # seconds between checks: a death is in the state file within about this


class HealthWatch:
    """Watches a lab's parts from a daemon thread until stop(); `problems` maps each dead part
    to its cause, in the order they died."""

    def __init__(
        self, parts: Callable[[], dict[str, str]], on_change: Callable[[dict[str, str]], None]
    ) -> None:
        self._parts = parts  # current {part: cause} of every dead part
        self._on_change = on_change
        self.problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tunlab-health", daemon=True)

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def check(self) -> dict[str, str]:
        """Look now (also what the thread does); the dead parts so far."""
        found = self._parts()
        new = {part: cause for part, cause in found.items() if part not in self.problems}
        if new:
            self.problems = {**self.problems, **new}
            self._on_change(dict(self.problems))
        return dict(self.problems)

    def _watch(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.check()
            except Exception:  # noqa: S112 (a part half torn down; the next round sees it whole)
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(2)


def link_part(link: Any, ei: int = -1) -> str:
    """How a link's relay is named in health messages: the link's ends (and which end's relay,
    for a bridge port's or a vxlan end's)."""
    label = " <-> ".join(f"{e.node}:{e.interface}" for e in link.endpoints)
    return f"link {label}" if ei < 0 else f"link {label} (relay of {link.endpoints[ei].node})"
