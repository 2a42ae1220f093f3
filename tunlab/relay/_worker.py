"""One direction of a Relay in its own process: the same pump as a thread, no GIL to share.

Started by file path (`python -I -S .../tunlab/relay/_worker.py SPEC`) so it comes up in
milliseconds without site-packages; it imports only the pump, the backends and the stages.
SPEC is JSON: both devices' handoff specs (with their fd numbers, passed by the parent), the
mode, stage specs, the read size, the parent's pid and the shared stats memory (fd and slot).
The worker dies with its parent (PR_SET_PDEATHSIG) or on SIGTERM.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _import_path() -> None:
    """Import tunlab from the tree this file is in (site-packages are off: -I -S)."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        sys.path.pop(0)  # never let this folder's modules shadow anything
    sys.path.insert(0, root)


def main() -> None:
    spec = json.loads(sys.argv[1])
    _die_with_parent(int(spec["parent"]))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    _import_path()
    from tunlab.devices._platform import from_handoff
    from tunlab.relay._control import Control
    from tunlab.relay._pump import Pump
    from tunlab.relay._stages import Pipeline, stage_from_spec
    from tunlab.relay._stats import READY, SLOT_WORDS, DirectionStats

    src = from_handoff(spec["src"]["fds"], spec["src"])
    dst = from_handoff(spec["dst"]["fds"], spec["dst"])
    shared = mmap.mmap(int(spec["stats_fd"]), int(spec["stats_size"]))
    slot = int(spec["slot"])
    words = memoryview(shared).cast("Q")[slot * SLOT_WORDS : (slot + 1) * SLOT_WORDS]
    stages = Pipeline([stage_from_spec(s) for s in spec["stages"]])
    control = Control(int(spec["control_fd"])) if int(spec.get("control_fd", -1)) >= 0 else None
    # blocking I/O when nothing has deadlines or messages: read -> write with no poll in between.
    # Both ends alike: the other direction's worker shares these open files (and their flags)
    nonblocking = bool(stages) or control is not None
    src.nonblocking = nonblocking
    dst.nonblocking = nonblocking
    pump = Pump(
        src,
        dst,
        DirectionStats(words),
        mode=spec["mode"],
        stages=stages,
        control=control,
        read_size=spec["read_size"],
    )
    words[READY] = 1  # the parent waits for this before the link counts as up (the pump may set 2)
    try:
        pump.run()
    except OSError:
        pass


if __name__ == "__main__":
    main()
