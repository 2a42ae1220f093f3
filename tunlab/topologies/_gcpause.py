"""Reading a big topology builds hundreds of thousands of small objects and frees almost none
until it is done: CPython's cyclic collector, triggered by the allocation count, then walks the
growing heap again and again (half the time of validating a 10,000-node lab). The collector is
paused while a topology is read; reference counting still frees everything as usual.

When a big read ends (100,000 objects or more), what it left alive (the topology: half a
million objects for 10,000 nodes) is long-lived, so it goes straight to the oldest generation
(gc.freeze then gc.unfreeze) instead of being walked by the next young collection (0.2 s) on
its way there. The young generations are collected as the pause starts (they are small), so
what moves is what the read made. Objects moved that way do not count toward CPython's own
trigger for a full collection, so the reads keep that count themselves: once they have moved
a quarter of what the last full collection left (at least a million objects), the next big
read ends with a full collection, which frees the cycles among them, as CPython would have by
then. Small reads leave the collector to its own rules. A process that froze objects of its
own (gc.freeze before forking workers) is left as it is: unfreeze would release those too."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # readers in progress (threads may read topologies at once)
_was_enabled = False
_BIG = 100_000  # objects a read makes before its walk by a young collection costs ~30 ms
_MIN_BUDGET = 1_000_000
_moved = 0  # objects moved to the oldest generation by reads since the last full collection
_budget = _MIN_BUDGET  # ... and how many may be, before a full collection is due


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (nested and threaded uses included);
    it is enabled again when the last block ends, if it was enabled before the first."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            if _was_enabled:
                gc.collect(1)  # small: so what a big read moves at its end is its own
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                if gc.get_count()[0] >= _BIG and gc.get_freeze_count() == 0:
                    _promote()
                gc.enable()


def _promote() -> None:
    """Move every tracked object to the oldest generation (two list splices), counting them;
    a full collection when the count says one is due."""
    global _moved, _budget
    _moved += gc.get_count()[0]  # objects made since the last young collection: the read's
    gc.freeze()
    gc.unfreeze()
    if _moved >= _budget:
        gc.collect()
        _moved = 0
        _budget = _next_budget()


def _next_budget() -> int:
    """A quarter of what the full collection left, as CPython's own rule (at least a million)."""
    return max(_MIN_BUDGET, len(gc.get_objects()) // 4)
