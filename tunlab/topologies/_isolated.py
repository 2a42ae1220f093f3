"""A template rendered in a child process whose limits the kernel enforces: RLIMIT_AS (the
memory the render may add) and RLIMIT_CPU, plus a wall-clock deadline from the parent. A single
C-level call — `'x' | center(1500000000)`, `'%01500000000d' % 1` — cannot be interrupted from
Python, so only a process boundary makes the documented limits hold against it.

The child is forked (no exec, so it costs a few milliseconds and needs nothing re-imported); it
renders with the in-process guard as well (for a clear message on a Python-level loop) and
streams the text back as it renders, then its verdict (done, or the error). The parent may
read the text while the child still renders — the YAML parser does, on the other core — and
hears the verdict before it reports anything about the text. Where there is no fork (Windows),
rendering stays in process with the guard alone.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

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


_TEXT, _VERDICT = b"T", b"V"  # frames: a kind byte, a 4-byte length, the payload
_BATCH = 1 << 16  # text is sent in pieces of about this many bytes


def _send(out: int, kind: bytes, payload: bytes) -> None:
    view = memoryview(kind + len(payload).to_bytes(4, "big") + payload)
    while view:
        view = view[os.write(out, view) :]


def _take_frames(raw: bytearray) -> list[tuple[bytes, bytes]]:
    """The whole frames (kind, payload) at the front of raw, taken out of it."""
    frames = []
    while len(raw) >= 5:
        end = 5 + int.from_bytes(raw[1:5], "big")
        if len(raw) < end:
            break
        frames.append((bytes(raw[:1]), bytes(raw[5:end])))
        del raw[:end]
    return frames


Render = Callable[[Callable[[str], None]], None]  # renders, each piece of text to the sink given


class _Batcher:
    """The child's sink: pieces of text gathered and sent in frames of about _BATCH bytes."""

    def __init__(self, out: int) -> None:
        self.out = out
        self.pending: list[str] = []
        self.size = 0

    def __call__(self, piece: str) -> None:
        self.pending.append(piece)
        self.size += len(piece)
        if self.size >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            _send(self.out, _TEXT, "".join(self.pending).encode())
            self.pending, self.size = [], 0


def _child(render: Render, path: str, lim: Limits, out: int) -> None:
    """Render, streaming the text in pieces, then the verdict ["ok"], ["error", message] or
    ["memory"]; never returns."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # the parent stops the render by killing this
        try:
            _limit_self(lim)
            sink = _Batcher(out)
            render(sink)
            sink.flush()
            verdict = ["ok"]
        except MemoryError:
            verdict = ["memory"]
        except TopologyError as exc:
            verdict = ["error", str(exc)]
        except BaseException as exc:
            verdict = ["error", f"{path}: template: {type(exc).__name__}: {exc}"]
        _send(out, _VERDICT, json.dumps(verdict).encode())
    finally:
        os._exit(0)


class RenderedStream:
    """The text a child renders, read while it renders: read() for a parser, then finish() for
    the whole text or the render's error (which comes before anything said about the text).

    A thread drains the pipe as the child writes, so the child never waits on a parser slower
    than itself: a wait would count against its render-seconds. The wall-clock deadline is
    for the child's text and verdict: once text is here, a slow parser is never timed out."""

    def __init__(self, pid: int, fd: int, path: str, lim: Limits) -> None:
        self._pid: int | None = pid
        self._fd = fd
        self._path, self._lim = path, lim
        self._deadline = time.monotonic() + lim.render_seconds + 0.5  # the child's guard speaks first
        self._parts: list[str] = []
        self._verdict: list[Any] | None = None
        self._status = 0
        self._frames: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._ended = False  # the pipe's end was read
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="tunlab-render-stream", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        """Read frames off the pipe as they come, until its end (or close())."""
        raw = bytearray()
        try:
            while not self._stop.is_set():
                if not select.select([self._fd], [], [], 0.1)[0]:
                    continue
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    break
                raw += chunk
                frames = _take_frames(raw)
                if frames:
                    with self._cond:
                        self._frames.extend(frames)
                        self._cond.notify()
        except (OSError, ValueError):
            pass  # the fd went away under close(): the reader is done either way
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()

    def _frame(self) -> tuple[bytes, bytes] | None:
        """The next whole frame, or None at the pipe's end; past the deadline with nothing
        come, the render's time error."""
        with self._cond:
            while not self._frames and not self._ended:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise _time_error(self._path, self._lim)
                self._cond.wait(left)
            return self._frames.popleft() if self._frames else None

    def read(self, size: int = -1) -> str:
        """The next piece of text, '' at the end (what libyaml's reader asks of a stream)."""
        while self._verdict is None:
            frame = self._frame()
            if frame is None:
                break
            kind, payload = frame
            if kind == _TEXT:
                text = payload.decode()
                self._parts.append(text)
                return text
            self._verdict = json.loads(payload)
        return ""

    def text_so_far(self) -> str:
        return "".join(self._parts)

    def finish(self) -> str:
        """The whole text once the child is done; the render's error (limits included) raised."""
        while self.read():
            pass
        self._reap()
        if os.WIFSIGNALED(self._status):  # SIGXCPU (RLIMIT_CPU), or killed some other way
            raise _time_error(self._path, self._lim)
        verdict = self._verdict or ["memory"]  # no words at all: it could not allocate them
        if verdict[0] == "ok":
            return self.text_so_far()
        if verdict[0] == "memory":
            raise memory_error(self._path, self._lim)
        raise TopologyError(str(verdict[1]))

    def _reap(self) -> None:
        if self._pid is not None:
            _pid, self._status = os.waitpid(self._pid, 0)
            self._pid = None

    def close(self) -> None:
        """Stop the child if it still runs, and the drain; nothing is left behind."""
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap()
        self._stop.set()
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@contextlib.contextmanager
def stream_isolated(render: Render, path: str, lim: Limits) -> Iterator[RenderedStream]:
    """render() run in a forked child held to lim, its text readable as it comes."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns on fork with threads: the child runs no one's locks
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(render, path, lim, write_end)
    os.close(write_end)
    stream = RenderedStream(pid, read_end, path, lim)
    try:
        yield stream
    finally:
        stream.close()
