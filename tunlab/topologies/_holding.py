"""The holding process's signals: SIGTERM or Ctrl-C during bring-up stops it at once (the engine
rolls back what it made); once the lab is up they only ask for teardown, which then always runs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A signal stopped the bring-up; the engine rolled back what was made."""


class Holder:
    """Install with `holder.install()`; call `holder.up()` once the lab is up; `wait()` after."""

    def __init__(self) -> None:
        self.stop = False
        self.deploying = True
        self.signal_name = ""

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        self.signal_name = signal.Signals(signum).name
        if self.deploying:
            self.deploying = False  # a second signal must not interrupt the rollback
            raise Interrupted(f"{self.signal_name} during bring-up")

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def up(self) -> None:
        """Bring-up finished: signals from now on only ask for teardown."""
        self.deploying = False

    def wait(self, down: Callable[[float], bool] | None = None) -> None:
        """Until SIGTERM or SIGINT, or down(timeout) says the lab went down (`tunlab down`
        asked through the control socket: Lab.wait_down)."""
        while not self.stop:
            if down is None:
                signal.pause()
            elif down(0.25):
                return
