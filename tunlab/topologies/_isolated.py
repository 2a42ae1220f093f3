"""A template rendered in a child process whose limits the kernel enforces: RLIMIT_AS (the
memory the render may add) and RLIMIT_CPU, plus a wall-clock deadline from the parent. A single
C-level call — `'x' | center(1500000000)`, `'%01500000000d' % 1` — cannot be interrupted from
Python, so only a process boundary makes the documented limits hold against it.

The child is forked (no exec, so it costs a few milliseconds and needs nothing re-imported); it
renders with the in-process guard as well (for a clear message on a Python-level loop) and
sends back the text or the error as JSON. Where there is no fork (Windows), rendering stays in
process with the guard alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
import warnings
from collections.abc import Callable

from tunlab.errors import TopologyError
from tunlab.topologies._limits import Limits, describe

HEADROOM = 32 << 20  # address space the child needs beyond the render itself (allocator, stack)


def available() -> bool:
    """Rendering can be isolated here (fork and setrlimit exist); TUNLAB_RENDER_IN_PROCESS=1
    turns it off (debugging a template with pdb)."""
    if os.environ.get("TUNLAB_RENDER_IN_PROCESS") == "1":
        return False
    try:
        import resource  # noqa: F401 (POSIX only)
    except ImportError:
        return False
    return hasattr(os, "fork")


def memory_error(path: str, lim: Limits) -> TopologyError:
    return TopologyError(
        f"{path}: template: it needs more than {lim.render_memory >> 20} MiB of memory, "
        f"{describe('render-memory', lim.render_memory)}"
    )


def _time_error(path: str, lim: Limits) -> TopologyError:
    return TopologyError(
        f"{path}: template: still rendering after {lim.render_seconds:g} s, "
        f"{describe('render-seconds', lim.render_seconds)}"
    )


def _limit_self(lim: Limits) -> None:
    """In the child: the address space it has now plus render_memory, and CPU seconds."""
    import resource

    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + lim.render_memory + HEADROOM,) * 2)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + lim.render_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _child(render: Callable[[], str], path: str, lim: Limits, out: int) -> None:
    """Render and send ["ok", text] or ["error", message] or ["memory"]; never returns."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # the parent stops the render by killing this
        try:
            _limit_self(lim)
            answer: list[str] = ["ok", render()]
        except MemoryError:
            answer = ["memory"]
        except TopologyError as exc:
            answer = ["error", str(exc)]
        except BaseException as exc:
            answer = ["error", f"{path}: template: {type(exc).__name__}: {exc}"]
        data = json.dumps(answer).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]
    finally:
        os._exit(0)


def render_isolated(render: Callable[[], str], path: str, lim: Limits) -> str:
    """render() in a forked child held to lim; its text, or the TopologyError it raised."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns on fork with threads: the child runs no one's locks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(render, path, lim, write_end)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + lim.render_seconds + 0.5  # the child's own guard speaks first
    ended = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _time_error(path, lim)
            if not select.select([read_end], [], [], left)[0]:
                continue
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        _pid, status = os.waitpid(pid, 0)
        ended = True
    finally:
        os.close(read_end)
        if not ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # SIGXCPU (RLIMIT_CPU), or killed some other way
        raise _time_error(path, lim)
    try:
        answer = json.loads(b"".join(chunks) or b'["memory"]')  # no words at all: it could not allocate them
    except ValueError:
        raise memory_error(path, lim) from None
    if answer[0] == "ok":
        return str(answer[1])
    if answer[0] == "memory":
        raise memory_error(path, lim)
    raise TopologyError(str(answer[1]))
