"""The detached holder of a lab (`tunlab up -d`): deploys, reports on a pipe, holds the lab until
`tunlab down` (through its control socket) or SIGTERM.

usage: python -m tunlab.topologies._supervisor --file F --name N --ready-fd FD [--var K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(prog="tunlab-supervisor")
    parser.add_argument("--file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--adopt-fd", type=int, help="take a running lab handed over on this socket")
    parser.add_argument("--var", action="append", default=[])
    parser.add_argument("--limit", action="append", default=[])
    args = parser.parse_args()

    if args.adopt_fd is not None:
        return _adopted(args.adopt_fd)
    ready = os.fdopen(args.ready_fd, "w")
    from tunlab.topologies._holding import Holder

    holder = Holder()
    holder.install()  # SIGTERM during bring-up stops it at once; the engine rolls back
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        from tunlab.topologies._lab import Lab
        from tunlab.topologies._limits import DEFAULT_LIMITS
        from tunlab.topologies._loader import load_file, parse_var

        topo = load_file(
            args.file, dict(parse_var(v) for v in args.var), limits=DEFAULT_LIMITS.with_overrides(args.limit)
        )
        lab = Lab(topo, name=args.name, source=args.file)
        lab.detached = True

        def progress(step: str, index: int, total: int) -> None:  # to `tunlab up -d`, as it goes
            ready.write(f"STEP {index} {total} {step}\n")
            ready.flush()

        lab.progress = progress
        lab.up()
    except (Exception, KeyboardInterrupt) as exc:
        text = str(exc) if not isinstance(exc, KeyboardInterrupt) else f"interrupted ({exc}): rolled back"
        ready.write(f"ERR {json.dumps(_error_record(exc, text))}\n")
        ready.close()
        print(f"tunlab supervisor: {text}", file=sys.stderr)
        return 1
    ready.write(f"OK {os.getpid()}\n")
    ready.close()
    print(f"tunlab supervisor {os.getpid()}: lab {lab.name} (id {lab.id}) is up", flush=True)
    return _hold_until_down(holder, lab)


def _hold_until_down(holder: Any, lab: Any) -> int:
    """Hold the lab until `tunlab down` (the control socket) or SIGTERM, then tear it down."""
    holder.up()
    holder.wait(lab.wait_down)
    for p in lab.down():
        print(f"teardown: {p}", file=sys.stderr)
    print(f"tunlab supervisor {os.getpid()}: lab {lab.name} is down", flush=True)
    return 0


def _adopted(fd: int) -> int:
    """Hold a lab another process handed over (tunlab.topologies._handover) until it is down."""
    from tunlab.topologies._adopt import adopt
    from tunlab.topologies._handover import receive
    from tunlab.topologies._holding import Holder

    holder = Holder()
    holder.install()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    message, fds, sock = receive(fd)
    try:
        lab = adopt(message, fds)
    except Exception as exc:
        sock.sendall(f"ERR {exc}\n".encode())
        print(f"tunlab supervisor: could not take lab {message.get('name')}: {exc}", file=sys.stderr)
        return 1
    sock.sendall(f"OK {os.getpid()}\n".encode())
    sock.close()
    print(f"tunlab supervisor {os.getpid()}: took over lab {lab.name} (id {lab.id})", flush=True)
    return _hold_until_down(holder, lab)


def _error_record(exc: BaseException, text: str) -> dict[str, str | None]:
    """What up_detached needs to raise the same error the foreground `up` would have."""
    from tunlab.errors import DeployError, TopologyError

    if isinstance(exc, DeployError):  # its reason, not cut out of a message whose step has ": "
        return {"type": "deploy", "step": exc.step, "field": exc.field, "message": exc.reason}
    if isinstance(exc, TopologyError):
        return {"type": "topology", "message": text}
    return {"type": "lab", "message": text}


if __name__ == "__main__":
    sys.exit(main())
