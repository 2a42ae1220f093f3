"""A token-bucket shaper (Linux tbf): a byte-limited FIFO drained as credit allows.

Credit is kept as time (ns of sending at `rate`), the bucket starts full, accrues continuously
up to `burst`, and is never borrowed: the head packet waits until its whole cost is there.
With `peakrate` a second bucket of depth `mtu` bounds the burst's speed. Packets larger than
the bucket can never be sent and are dropped at enqueue, as tbf does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableSequence

from tunlab.relay._stats import I_DROPPED, OVERLIMITS, SHAPER_DROPS
from tunlab.relay.impair._params import ShaperParams

Packet = bytes | bytearray | memoryview
NSEC = 10**9


class Shaper:
    """enqueue(pkt, now) then dequeue(now, out); next_wakeup() says when credit suffices."""

    def __init__(
        self, params: ShaperParams, counters: MutableSequence[int] | memoryview, now_ns: int
    ) -> None:
        self.c = counters
        self.queue: deque[Packet] = deque()
        self.backlog_bytes = 0
        self.wake: int | None = None
        self.configure(params, now_ns)

    def configure(self, params: ShaperParams, now_ns: int) -> None:
        """New settings; the bucket refills (tbf change), queued packets stay."""
        self.p = params
        self.buffer_ns = self.cost(params.rate_bps, params.burst)
        self.mtu_ns = self.cost(params.peakrate_bps, params.mtu) if params.peakrate_bps else 0
        self.tokens = self.buffer_ns
        self.ptokens = self.mtu_ns
        self.t_c = now_ns
        self.max_size = min(params.burst, params.mtu) if params.peakrate_bps else params.burst

    def cost(self, rate_bps: int, length: int) -> int:
        """ns of credit a packet of `length` bytes costs at rate_bps (tbf's l2t)."""
        p = self.p
        n = max(length + p.overhead, p.mpu)
        if p.atm:
            n = -(-n // 48) * 53
        return n * 8 * NSEC // rate_bps

    def enqueue(self, pkt: Packet, now: int) -> None:
        """Queue one packet at time now (ns); dropped when the queue is over its limit."""
        n = len(pkt)
        if n > self.max_size or self.backlog_bytes + n > self.p.limit:
            self.c[SHAPER_DROPS] += 1
            self.c[I_DROPPED] += 1
            return
        self.queue.append(pkt)
        self.backlog_bytes += n

    def dequeue(self, now: int, out: list[Packet]) -> None:
        """Send from the head while the credit covers it (a late wake-up loses no throughput)."""
        q = self.queue
        p = self.p
        self.wake = None
        while q:
            n = len(q[0])
            elapsed = min(now - self.t_c, self.buffer_ns)
            toks = min(self.tokens + elapsed, self.buffer_ns) - self.cost(p.rate_bps, n)
            ptoks = 0
            if p.peakrate_bps:
                ptoks = min(self.ptokens + elapsed, self.mtu_ns) - self.cost(p.peakrate_bps, n)
            if toks >= 0 and ptoks >= 0:
                out.append(q.popleft())
                self.backlog_bytes -= n
                self.tokens, self.ptokens, self.t_c = toks, ptoks, now
                continue
            self.c[OVERLIMITS] += 1
            self.wake = now + max(-toks, -ptoks)
            break

    def next_wakeup(self) -> int | None:
        """When the next queued packet may leave (ns), or None when the queue is empty."""
        return self.wake if self.queue else None

    def drain(self) -> list[Packet]:
        """Every queued packet at once (on stop)."""
        out = list(self.queue)
        self.queue.clear()
        self.backlog_bytes = 0
        return out
