"""Start child processes that must die with this process, from one long-lived thread.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a relay
worker (or qemu) started from a short-lived thread — a thread pool, asyncio's executor, a
pytest-xdist worker's helper — would be killed the moment that thread ends. Every such child is
started here instead, by a daemon thread that lives as long as the process.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

_requests: queue.SimpleQueue[tuple[Sequence[str], dict[str, Any], Future[subprocess.Popen[Any]]]] = (
    queue.SimpleQueue()
)
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _serve() -> None:
    while True:
        argv, kwargs, fut = _requests.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(subprocess.Popen(list(argv), **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen(argv, **kwargs), forked by the process's long-lived spawner thread."""
    global _thread
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of arguments, not a string")
    if kwargs.get("shell"):
        raise ValueError("shell=True is not allowed: pass an argv list")
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_serve, name="tunlab-spawner", daemon=True)
            _thread.start()
    fut: Future[subprocess.Popen[Any]] = Future()
    _requests.put((argv, kwargs, fut))
    return fut.result()


def how_it_ended(returncode: int) -> str:
    """A child's end in words, from its Popen return code: "was killed by SIGKILL" (a negative
    code is the signal) or "exited with status 1"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"
