"""Reading a big topology builds hundreds of thousands of small objects and frees almost none
until it is done: CPython's cyclic collector, triggered by the allocation count, then walks the
growing heap again and again (half the time of validating a 10,000-node lab). The collector is
paused while a topology is read; reference counting still frees everything as usual.

When it ends, what the read left alive (the topology: half a million objects for 10,000 nodes)
is long-lived, so it goes straight to the oldest generation (gc.freeze then gc.unfreeze)
instead of being walked by the next young collection (0.2 s) on its way there. Cycles in it are
still found by the next full collection. A process that froze objects of its own (gc.freeze
before forking workers) is left as it is: unfreeze would release those too."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # readers in progress (threads may read topologies at once)
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (nested and threaded uses included);
    it is enabled again when the last block ends, if it was enabled before the first."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                if gc.get_freeze_count() == 0:
                    gc.freeze()  # every tracked object to the permanent generation, and
                    gc.unfreeze()  # back into the oldest one: two list splices
                gc.enable()
