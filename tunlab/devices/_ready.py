"""Awaitables that are done already: `await ready(v)` is v at once, made without a coroutine.

Framed hands one out for each packet split earlier from a super-packet, and for each send that
only joins the batch: there a coroutine (made, run, finished per packet) cost more than the
packet's own work. The compiled core's Ready answers the interpreter's await directly and is
stateless (one object may be awaited any number of times); without the core (no C compiler,
TUNLAB_PURE=1) ready() is a coroutine again and DONE a small reusable awaitable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tunlab.devices.offload import _impl

T = TypeVar("T")


async def _coroutine(value: T) -> T:
    """The pure-Python ready(): a coroutine, awaited once."""
    return value


_EXHAUSTED: Iterator[Any] = iter(())  # shared: an await on it ends at once, with None


class _Done:
    """The pure-Python DONE: awaiting it gives None at once, as often as it is awaited (its
    __await__ hands out an iterator that is already exhausted: a coroutine's cost, reusable)."""

    __slots__ = ()

    def __await__(self) -> Iterator[Any]:
        return _EXHAUSTED


if TYPE_CHECKING:

    def ready(value: T) -> Awaitable[T]:
        """An awaitable that is done already and gives value."""

else:
    ready = getattr(_impl.compiled_core(), "ready", None) or _coroutine


class _PacketReader:
    """The pure-Python packet_reader: one coroutine per packet (its __anext__), no more."""

    __slots__ = ("_fallback", "_pending")

    def __init__(self, pending: deque[bytes], fallback: Callable[[], Awaitable[bytes]]) -> None:
        self._pending, self._fallback = pending, fallback

    def __aiter__(self) -> _PacketReader:
        return self

    async def __anext__(self) -> bytes:
        pending = self._pending
        if pending:
            return pending.popleft()
        return await self._fallback()


# packet_reader(pending, fallback): an async iterator giving pending.popleft() while the deque
# has packets (as a done awaitable, compiled), else what fallback() gives (it waits for a read)
PacketReader = Callable[[deque[bytes], Callable[[], Awaitable[bytes]]], AsyncIterator[bytes]]
packet_reader: PacketReader = getattr(_impl.compiled_core(), "packet_reader", None) or _PacketReader

# shared by every send that only queued: the compiled Ready may be awaited again and again
DONE: Awaitable[None] = ready(None) if ready is not _coroutine else cast(Awaitable[None], _Done())
