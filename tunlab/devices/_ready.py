"""Awaitables that are done already: `await ready(v)` is v at once, made without a coroutine.

Framed hands one out for each packet split earlier from a super-packet, and for each send that
only joins the batch: there a coroutine (made, run, finished per packet) cost more than the
packet's own work. The compiled core's Ready answers the interpreter's await directly and is
stateless (one object may be awaited any number of times); without the core (no C compiler,
TUNLAB_PURE=1) ready() is a coroutine again and DONE a small reusable awaitable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tunlab.devices.offload import _impl

T = TypeVar("T")


async def _coroutine(value: T) -> T:
    """The pure-Python ready(): a coroutine, awaited once."""
    return value


class ReadyValue(Generic[T]):
    """A done awaitable that may be awaited many times (the pure-Python DONE)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        yield from ()  # a generator that yields nothing: each await runs a fresh one to its return
        return self.value


if TYPE_CHECKING:

    def ready(value: T) -> Awaitable[T]:
        """An awaitable that is done already and gives value."""

else:
    ready = getattr(_impl.compiled_core(), "ready", None) or _coroutine

# packet_reader(pending, fallback): an async iterator giving pending.popleft() as a done
# awaitable while the deque has packets, else fallback() (which waits for a read); None
# without the compiled core, where Framed is its own iterator
PacketReader = Callable[[deque[bytes], Callable[[], Awaitable[bytes]]], AsyncIterator[bytes]]
packet_reader: PacketReader | None = getattr(_impl.compiled_core(), "packet_reader", None)

# shared by every send that only queued: the compiled Ready may be awaited again and again
DONE: Awaitable[None] = ready(None) if ready is not _coroutine else ReadyValue(None)
