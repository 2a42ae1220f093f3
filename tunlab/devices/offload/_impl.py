"""Which implementation of the hot offload code runs: the compiled core or the pure Python.

The compiled core (`_fast`, an optional C extension) is used when it was built; the pure-Python
code (numpy-accelerated where installed) is the reference and the fallback, with the same
results byte for byte. TUNLAB_PURE=1 in the environment forces the pure code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

IMPLEMENTATIONS = ("compiled", "python")


def _load() -> ModuleType | None:
    if os.environ.get("TUNLAB_PURE", "") not in ("", "0"):
        return None
    try:
        from tunlab.devices.offload import _fast  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _fast
    return module


_compiled: ModuleType | None = _load()
fast: ModuleType | None = _compiled  # what the offload modules call; None: the pure code


def compiled_core() -> ModuleType | None:
    """The compiled module when it was built (and TUNLAB_PURE is not set), whatever use() chose."""
    return _compiled


def implementation() -> str:
    """'compiled' or 'python': which one split, coalesce and the checksums use now."""
    return "compiled" if fast is not None else "python"


def available() -> tuple[str, ...]:
    """The implementations this installation has ('python' always)."""
    return IMPLEMENTATIONS if _compiled is not None else ("python",)


def use(name: str) -> None:
    """Switch implementation: 'compiled' (if built) or 'python'."""
    global fast
    if name == "python":
        fast = None
    elif name == "compiled":
        if _compiled is None:
            raise RuntimeError(
                "the compiled offload core is not built (no C compiler at install, or TUNLAB_PURE=1)"
            )
        fast = _compiled
    else:
        raise ValueError(f"implementation: expected 'compiled' or 'python', got {name!r}")


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """`with using("python"):` — for differential tests and benchmarks."""
    global fast
    before = fast
    use(name)
    try:
        yield
    finally:
        fast = before
