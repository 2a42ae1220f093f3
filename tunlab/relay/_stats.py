"""What crossed one direction of a relay: counters a pump updates in place.

The counters are 64-bit words in a buffer, so a thread pump and a process pump update them the
same way: a thread's live in this process, a worker process's in shared memory the parent
reads (no messages, no locks: one writer per direction).
"""

from __future__ import annotations

import array
from typing import Any

FIELDS = ("frames_in", "frames_out", "bytes_in", "bytes_out", "super_frames_in", "dropped")
FRAMES_IN, FRAMES_OUT, BYTES_IN, BYTES_OUT, SUPERS, DROPPED, DROPPED_BYTES, READY = range(8)
# an impairment stage's counters follow the pump's, as `tc -s qdisc` shows them
IMPAIR_FIELDS = (
    "sent", "sent_bytes", "dropped", "lost", "limit_drops", "shaper_drops", "duplicated",
    "corrupted", "reordered", "ecn_marked", "overlimits", "backlog", "backlog_bytes",
    "generation", "active",
)  # fmt: skip
IMPAIR_BASE = 8
IMPAIR_WORDS = 16
(
    SENT, SENT_BYTES, I_DROPPED, LOST, LIMIT_DROPS, SHAPER_DROPS, DUPLICATED, CORRUPTED,
    REORDERED, ECN_MARKED, OVERLIMITS, BACKLOG, BACKLOG_BYTES, GENERATION, ACTIVE,
) = range(len(IMPAIR_FIELDS))  # fmt: skip
SLOT_WORDS = IMPAIR_BASE + IMPAIR_WORDS
# READY also says how to read the out counters: 2 = "out is in minus dropped" (the fast loop
# counts only what it reads and what it drops: two fewer updates per frame)
READY_DERIVED = 2


class DirectionStats:
    """Reads, writes and bytes of one direction (frames include their headers)."""

    def __init__(self, words: memoryview | None = None) -> None:
        self.words: memoryview = (
            words if words is not None else memoryview(array.array("Q", bytes(8 * SLOT_WORDS)))
        )
        self.errors: list[str] = []

    @property
    def frames_in(self) -> int:
        """Reads (frames received)."""
        return int(self.words[FRAMES_IN])

    @property
    def frames_out(self) -> int:
        """Frames (or, in batch mode, packets) written."""
        w = self.words
        if w[READY] == READY_DERIVED:
            return int(w[FRAMES_IN] - w[DROPPED])
        return int(w[FRAMES_OUT])

    @property
    def bytes_in(self) -> int:
        """Bytes read from the source device."""
        return int(self.words[BYTES_IN])

    @property
    def bytes_out(self) -> int:
        """Bytes written to the destination device."""
        w = self.words
        if w[READY] == READY_DERIVED:
            return int(w[BYTES_IN] - w[DROPPED_BYTES])
        return int(w[BYTES_OUT])

    @property
    def super_frames_in(self) -> int:
        """Reads that carried a GSO super-packet."""
        return int(self.words[SUPERS])

    @property
    def dropped(self) -> int:
        """Frames a stage dropped or the destination refused."""
        return int(self.words[DROPPED])

    @property
    def impair_words(self) -> memoryview:
        """The words an impairment stage of this direction counts in."""
        return self.words[IMPAIR_BASE : IMPAIR_BASE + IMPAIR_WORDS]

    def impairment(self) -> dict[str, int] | None:
        """The impairment stage's counters, or None when this direction has none."""
        w = self.words
        if not w[IMPAIR_BASE + ACTIVE] and not w[IMPAIR_BASE + GENERATION]:
            return None
        return {name: int(w[IMPAIR_BASE + i]) for i, name in enumerate(IMPAIR_FIELDS) if name != "active"}

    def error(self, text: str) -> None:
        """Remember one error's text (the first 100; a flood does not grow without bound)."""
        if len(self.errors) < 100:  # a flood of refusals must not grow without bound
            self.errors.append(text)

    def detach(self) -> None:
        """Keep the current values in private memory (the shared buffer is about to go)."""
        old = self.words
        self.words = memoryview(array.array("Q", old.tobytes()))
        old.release()

    def as_dict(self) -> dict[str, Any]:
        """Every counter and the errors, as plain data (what stats() and inspect show)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        out["errors"] = list(self.errors)
        impaired = self.impairment()
        if impaired is not None:
            out["impairment"] = impaired
        return out

    def __repr__(self) -> str:
        return f"DirectionStats({', '.join(f'{k}={v}' for k, v in self.as_dict().items())})"
