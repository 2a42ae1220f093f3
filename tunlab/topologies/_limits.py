"""Bounds on what reading a topology may cost, so hostile or broken input fails fast and small.

Every limit has a name (used in errors and in `--limit NAME=VALUE`) and a default large enough
for honest big labs. A guard watches time and memory while a template renders: past a limit it
interrupts the render (from a watchdog thread, in the main thread) or stops it at its next
call (in other threads), and the error names the limit and how to raise it.
"""

from __future__ import annotations

import _thread
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from tunlab.errors import TopologyError
from tunlab.topologies._fieldpath import format_path

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Limits:
    """What loading one topology may cost (sizes in bytes, time in seconds)."""

    file_size: int = 4 << 20  # bytes of the file as given
    rendered_size: int = 16 << 20  # bytes the template may produce
    render_seconds: float = 5.0  # wall time of the template
    render_memory: int = 512 << 20  # growth of this process's memory while rendering
    depth: int = 64  # nesting of mappings and lists
    values: int = 200_000  # values in the document, after YAML aliases are expanded

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> Limits:
        """`--limit NAME=VALUE` (VALUE may end in k, M or G for sizes); ValueError naming it."""
        known = {f.name.replace("_", "-"): f for f in fields(self)}
        changes: dict[str, Any] = {}
        for item in assignments:
            name, sep, raw = item.partition("=")
            key = name.strip().replace("_", "-")
            if not sep or key not in known:
                raise ValueError(
                    f"--limit {item!r}: write NAME=VALUE with NAME one of {', '.join(sorted(known))}"
                )
            field = known[key]
            m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)i?[bB]?\s*", raw)
            if m is None:
                raise ValueError(f"--limit {item!r}: {raw!r} is not a number (like 64M or 30)")
            number = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if number <= 0:
                raise ValueError(f"--limit {item!r}: a limit must be positive")
            changes[field.name] = number if field.type in ("float", float) else int(number)
        return replace(self, **changes)


DEFAULT_LIMITS = Limits()


def describe(name: str, value: float) -> str:
    """A limit as the user sets it, for messages: 'file-size 4M (--limit file-size=...)'."""
    shown = f"{value:g}"
    if isinstance(value, int) and value >= 1 << 10:
        for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
            if value % size == 0:
                shown = f"{value // size}{unit}"
                break
    return f"the limit {name}={shown} (raise it with --limit {name}=VALUE)"


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


class RenderGuard:
    """Stops a render that runs past render_seconds or grows memory past render_memory."""

    def __init__(self, limits: Limits, path: str) -> None:
        self.limits = limits
        self.path = path
        self.reason: str | None = None
        self.deadline = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.current_thread() is threading.main_thread()
        self._interrupted = False  # the watchdog sent the main thread a KeyboardInterrupt

    def check(self) -> None:
        """Cooperative check (called by the sandbox on every call): raises past a limit."""
        if self.reason is None and time.monotonic() > self.deadline:
            self.reason = self._time_reason()
        if self.reason is not None:
            raise TopologyError(self.reason)

    def _time_reason(self) -> str:
        return (
            f"{self.path}: template: still rendering after {self.limits.render_seconds:g} s, "
            f"{describe('render-seconds', self.limits.render_seconds)}"
        )

    def _watch(self) -> None:
        base = _rss()
        while not self._done.wait(0.02):
            if time.monotonic() > self.deadline:
                self.reason = self._time_reason()
            elif base and _rss() - base > self.limits.render_memory:
                self.reason = (
                    f"{self.path}: template: it needs more than "
                    f"{self.limits.render_memory >> 20} MiB of memory, "
                    f"{describe('render-memory', self.limits.render_memory)}"
                )
            if self.reason is not None:
                if self._main:
                    self._interrupted = True
                    _thread.interrupt_main()
                return

    def __enter__(self) -> RenderGuard:
        self.deadline = time.monotonic() + self.limits.render_seconds
        self._thread = threading.Thread(target=self._watch, name="tunlab-render-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._done.set()
        try:
            if self._thread is not None:
                self._thread.join()
            _bytecode_boundary()  # a KeyboardInterrupt the watchdog sent is delivered by now
        except KeyboardInterrupt:
            # the main thread noticed the limit itself (check) while the watchdog did too: its
            # interrupt came late, into this exit; it is this guard's, not the user's Ctrl-C
            if not self._interrupted:
                raise
        if (
            self.reason is not None
            and exc_type is not None
            and issubclass(exc_type, (KeyboardInterrupt, MemoryError))
        ):
            raise TopologyError(self.reason) from None


def _bytecode_boundary() -> None:
    """A Python-level call: pending signal handlers (interrupt_main's) run at the call."""


def check_shape(data: Any, limits: Limits, path: str) -> None:
    """The parsed document nests at most `depth` deep and holds at most `values` values.

    Only containers go on the stack (their scalars are counted by length), so a 10,000-node
    document is walked in a few milliseconds per thousand nodes."""
    count = 1
    stack: list[tuple[Any, int, tuple[Any, ...]]] = []
    if isinstance(data, (dict, list)):
        stack.append((data, 1, ()))
    while stack:
        value, depth, loc = stack.pop()
        if depth > limits.depth:
            raise TopologyError(
                f"{path}: {format_path(loc)}: nested more than {limits.depth} levels deep, "
                f"{describe('depth', limits.depth)}"
            )
        count += len(value)
        if count > limits.values:
            raise TopologyError(
                f"{path}: the document holds more than {limits.values} values (YAML anchors and "
                f"aliases count each time they are used), {describe('values', limits.values)}"
            )
        items: Iterator[tuple[Any, Any]] = (
            iter(value.items()) if isinstance(value, dict) else enumerate(value)
        )
        for k, v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1, (*loc, k)))
