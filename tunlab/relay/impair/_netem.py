"""netem in userspace: one direction's enqueue decisions and time-ordered queue.

Follows Linux netem's order of operations (duplicate, loss/ECN, corrupt, limit, the clone
through the pipeline again, reorder or delay with rate and slot) on a clock given by the caller
in nanoseconds, so it runs the same under a relay's real clock and a test's virtual one.
Docs: docs/impairments.md.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, MutableSequence

from tunlab.relay._stats import (
    CORRUPTED,
    DUPLICATED,
    ECN_MARKED,
    I_DROPPED,
    LIMIT_DROPS,
    LOST,
    REORDERED,
)
from tunlab.relay.impair import _packet as packet
from tunlab.relay.impair import _rand as rand
from tunlab.relay.impair._params import GEParams, GIParams, NetemParams

Packet = bytes | bytearray | memoryview
Counters = MutableSequence[int] | memoryview
NSEC = 10**9
INT_MAX = 2**31 - 1


class _Random:
    """Random loss with netem's correlation (or the ideal chain)."""

    def __init__(self, params: NetemParams, rng: random.Random) -> None:
        self.event = rand.Correlated(params.loss, params.loss_correlation, rng, params.ideal)

    def lost(self) -> bool:
        return self.event.fires()


class _GilbertElliott:
    """Good/Bad: move first (one draw), then lose by the state the packet was in (another)."""

    def __init__(self, ge: GEParams, rng: random.Random) -> None:
        self.rng = rng
        self.a1 = rand.u32_prob(ge.p)
        self.a2 = rand.u32_prob(ge.r)
        self.h = (rand.U32 - 1) - rand.u32_prob(ge.one_minus_h)
        self.k1 = rand.u32_prob(ge.one_minus_k)
        self.bad = False

    def lost(self) -> bool:
        draw = self.rng.getrandbits
        if not self.bad:
            if draw(32) < self.a1:
                self.bad = True
            return draw(32) < self.k1
        if draw(32) < self.a2:
            self.bad = False
        return draw(32) > self.h


class _FourState:
    """States 1 (gap, sent), 2 (burst, sent), 3 (burst, lost), 4 (isolated loss): fate = state entered."""

    def __init__(self, gi: GIParams, rng: random.Random) -> None:
        self.rng = rng
        self.p13, self.p31 = rand.u32_prob(gi.p13), rand.u32_prob(gi.p31)
        self.p32, self.p23 = rand.u32_prob(gi.p32), rand.u32_prob(gi.p23)
        self.p14 = rand.u32_prob(gi.p14)
        self.state = 1

    def lost(self) -> bool:
        x = self.rng.getrandbits(32)
        s = self.state
        if s == 1:
            if x < self.p14:
                self.state = 4
                return True
            if x < self.p14 + self.p13:
                self.state = 3
                return True
            return False
        if s == 2:
            if x < self.p23:
                self.state = 3
                return True
            return False
        if s == 3:
            if x < self.p32:
                self.state = 2
                return False
            if x < self.p32 + self.p31:
                self.state = 1
                return False
            return True
        self.state = 1
        return False


def _loss_model(params: NetemParams, rng: random.Random) -> _Random | _GilbertElliott | _FourState | None:
    if params.gemodel is not None:
        return _GilbertElliott(params.gemodel, rng)
    if params.state is not None:
        return _FourState(params.state, rng)
    if params.loss:
        return _Random(params, rng)
    return None


def _table(dist: str | list[int]) -> list[int] | None:
    if isinstance(dist, list):
        return dist
    return None if dist == "uniform" else list(rand.table(dist))


class _Features:
    """The generators of one pass through the pipeline (originals, or duplicates in ideal mode)."""

    def __init__(self, params: NetemParams, streams: dict[str, random.Random]) -> None:
        ideal = params.ideal
        self.dup = rand.Correlated(
            params.duplicate, params.duplicate_correlation, streams["duplicate"], ideal
        )
        self.loss = _loss_model(
            params, streams["loss" if params.gemodel is None and params.state is None else "state"]
        )
        self.corrupt = rand.Correlated(params.corrupt, params.corrupt_correlation, streams["corrupt"], ideal)
        self.corrupt_rng = streams["corrupt"]
        self.reorder = rand.Correlated(params.reorder, params.reorder_correlation, streams["reorder"], ideal)
        self.delay = rand.DelaySampler(
            params.delay_ns,
            min(params.jitter_ns, INT_MAX),
            params.delay_correlation,
            _table(params.distribution),
            streams["delay"],
            ideal,
        )


class NetemQueue:
    """enqueue(packet, now_ns) decides a packet's fate; dequeue(now_ns) returns what is due.

    Counters (lost, limit drops, duplicated, corrupted, reordered, ECN-marked) go into the
    given word array; held/held_bytes are the backlog.
    """

    def __init__(self, params: NetemParams, counters: Counters, *, l2: bool, now_ns: int) -> None:
        self.l2 = l2
        self.c = counters
        self._heap: list[tuple[int, int, Packet]] = []  # out-of-order arrivals
        self._tail: deque[tuple[int, int, Packet]] = deque()  # monotone time_to_send: the usual case
        self.immediate: deque[Packet] = deque()  # reordered packets: sent first, LIFO among themselves
        self._seq = 0
        self.max_tts: int | None = None  # the latest time_to_send held (rate, preserve_order)
        self.held = 0
        self.held_bytes = 0
        self.counter = 0  # packets since the last reordered one (gap)
        self._streams: dict[str, random.Random] | None = None
        self._clone_streams: dict[str, random.Random] | None = None
        self.params = NetemParams()
        self.configure(params, now_ns)

    # ---- configuration --------------------------------------------------------------------
    def configure(self, params: NetemParams, now_ns: int) -> None:
        """Replace the settings (tc change): queued packets stay; generators, the reorder
        counter and the slot restart; the random streams continue unless the seed or the
        mode changed (so a change is not a re-seed)."""
        old = self.params
        if self._streams is None or params.seed != old.seed or params.ideal != old.ideal:
            self._streams = rand.streams(params.seed, params.ideal)
            self._clone_streams = (
                rand.streams(params.seed, True, tag="duplicate") if params.ideal else self._streams
            )
        assert self._clone_streams is not None
        keep_model = self.params.gemodel == params.gemodel and self.params.state == params.state
        old_loss = getattr(self, "features", None)
        self.params = params
        self.features = _Features(params, self._streams)
        self.clone_features = _Features(params, self._clone_streams) if params.ideal else self.features
        if keep_model and old_loss is not None and isinstance(old_loss.loss, (_GilbertElliott, _FourState)):
            new = self.features.loss
            if isinstance(new, (_GilbertElliott, _FourState)):
                new.__dict__.update(
                    {k: v for k, v in old_loss.loss.__dict__.items() if k in ("bad", "state")}
                )
        self.counter = 0
        self.rate_Bps = params.rate_bps // 8
        self.gap = params.gap or (1 if params.reorder else 0)
        self.ordered = params.preserve_order or self.rate_Bps > 0
        slot = params.slot
        self._slot_table = _table(slot.distribution) if slot is not None and slot.distribution else None
        self.slot_next = 0
        if slot is not None:
            self._new_slot(now_ns)

    # ---- enqueue ----------------------------------------------------------------------------
    def enqueue(self, pkt: Packet, now: int, is_dup: bool = False) -> None:
        """Decide one packet's fate (netem_enqueue): drop it, or hold it until its time."""
        p = self.params
        ideal = p.ideal
        f = self.clone_features if is_dup else self.features
        c = self.c
        # netem mode draws in the kernel's order, only what the packet reaches; ideal mode draws
        # every feature for every packet, so the n-th packet's fate in one feature depends on the
        # seed, that feature's settings and n alone
        duplicated = (f.dup.fires() and not is_dup) if ideal else (not is_dup and f.dup.fires())
        lost = f.loss.lost() if f.loss is not None else False
        if lost and p.ecn:
            marked = packet.mark_ce(pkt, self.l2)
            if marked is not None:
                pkt, lost = marked, False
                c[ECN_MARKED] += 1
        corrupt = False
        offset = bit = 0
        if ideal and p.corrupt:
            corrupt = f.corrupt.fires()
            offset, bit = f.corrupt_rng.getrandbits(32), f.corrupt_rng.getrandbits(3)
        count = 1 + duplicated - lost
        if count == 0:
            c[LOST] += 1
            c[I_DROPPED] += 1
            self._draw_rest(f, p)
            return
        clone = pkt if count == 2 else None  # the clone is taken before corruption
        if not ideal and p.corrupt and f.corrupt.fires():
            corrupt = True
            offset, bit = f.corrupt_rng.getrandbits(32), f.corrupt_rng.getrandbits(3)
        if corrupt and pkt:
            pkt = packet.flip_bit(pkt, offset % len(pkt), bit)
            c[CORRUPTED] += 1
        if self.held >= p.limit:
            dropped = 2 if clone is not None else 1
            c[LIMIT_DROPS] += dropped
            c[I_DROPPED] += dropped
            self._draw_rest(f, p)
            return
        if clone is not None:
            c[DUPLICATED] += 1
            self.enqueue(clone, now, is_dup=True)  # through the whole pipeline again
        reordered = False
        if ideal:
            chosen = f.reorder.fires() if p.reorder else False
            reordered = chosen and self.gap > 0 and self.counter >= self.gap - 1
            delay = f.delay.sample() if p.jitter_ns else p.delay_ns
        else:
            if self.gap and self.counter >= self.gap - 1:
                reordered = f.reorder.prob >= f.reorder.uniform()
            delay = f.delay.sample() if p.jitter_ns and not reordered else p.delay_ns
        if reordered:
            self.immediate.appendleft(pkt)
            self.counter = 0
            c[REORDERED] += 1
            self._held(pkt, now)
            return
        if self.rate_Bps:
            start = now + delay if self.max_tts is None else max(self.max_tts, now + delay)
            tts = start + self._tx_ns(len(pkt))
        elif self.ordered and self.max_tts is not None:
            tts = max(self.max_tts, now + delay)
        else:
            tts = now + delay
        self._seq += 1
        item = (tts, self._seq, pkt)
        if not self._tail or tts >= self._tail[-1][0]:
            self._tail.append(item)
        else:
            heapq.heappush(self._heap, item)
        self.counter += 1
        self._held(pkt, tts)

    def _draw_rest(self, f: _Features, p: NetemParams) -> None:
        """Ideal mode: a dropped packet still takes its reorder and delay draws."""
        if not p.ideal:
            return
        if p.reorder:
            f.reorder.fires()
        if p.jitter_ns:
            f.delay.sample()

    def _held(self, pkt: Packet, tts: int) -> None:
        self.held += 1
        self.held_bytes += len(pkt)
        if self.max_tts is None or tts > self.max_tts:
            self.max_tts = tts

    def _tx_ns(self, length: int) -> int:
        p = self.params
        n = length + p.packet_overhead
        if p.cell_size:
            cells = -(-n // p.cell_size) if n > 0 else 0
            n = cells * (p.cell_size + p.cell_overhead)
        return max(n, 0) * NSEC // self.rate_Bps

    # ---- dequeue ----------------------------------------------------------------------------
    def _peek(self) -> tuple[int, int, Packet] | None:
        heap, tail = self._heap, self._tail
        if heap and (not tail or heap[0][:2] < tail[0][:2]):
            return heap[0]
        return tail[0] if tail else None

    def _pop(self) -> Packet:
        heap, tail = self._heap, self._tail
        item = heapq.heappop(heap) if heap and (not tail or heap[0][:2] < tail[0][:2]) else tail.popleft()
        return item[2]

    def dequeue(self, now: int, out: list[Packet]) -> None:
        """Append every packet due at `now` to out: reordered ones first, then by time_to_send."""
        immediate = self.immediate
        while immediate:
            self._release(immediate.popleft(), out)
        slot = self.params.slot
        while True:
            head = self._peek()
            if head is None:
                break
            tts = head[0]
            if slot is not None:
                if self.slot_next and self.slot_next < tts:
                    self._new_slot(now)  # an idle gap: slots are not banked
                if tts > now or self.slot_next > now:
                    break
                pkt = self._pop()
                self.packets_left -= 1
                self.bytes_left -= len(pkt)
                if self.packets_left <= 0 or self.bytes_left <= 0:
                    self._new_slot(now)
                self._release(pkt, out)
                continue
            if tts > now:
                break
            self._release(self._pop(), out)
        if not self.held:
            self.max_tts = None

    def _release(self, pkt: Packet, out: list[Packet]) -> None:
        self.held -= 1
        self.held_bytes -= len(pkt)
        out.append(pkt)

    def next_wakeup(self) -> int | None:
        """When the next held packet becomes due (ns), or None when nothing waits."""
        if self.immediate:
            return 0
        head = self._peek()
        if head is None:
            return None
        if self.params.slot is not None:
            return max(head[0], self.slot_next)
        return head[0]

    # ---- slots ------------------------------------------------------------------------------
    def _new_slot(self, now: int) -> None:
        slot = self.params.slot
        assert slot is not None
        rng = self._streams["slot"] if self._streams is not None else random.Random(0)  # noqa: S311 - seeded simulation, not secrets
        if slot.distribution is not None:
            length = rand.tabledist(slot.delay_ns, slot.jitter_ns, rng.getrandbits(32), self._slot_table)
        else:
            length = slot.min_ns + ((rng.getrandbits(32) * (slot.max_ns - slot.min_ns)) >> 32)
        self.slot_next = now + max(length, 0)
        self.packets_left = slot.packets or INT_MAX
        self.bytes_left = slot.bytes or INT_MAX

    def convert(self, fn: Callable[[Packet], list[Packet]]) -> None:
        """Replace every held item by fn(item) (frames split into packets, packets wrapped as
        frames), keeping each one's send time and the order."""
        items = sorted([*self._heap, *self._tail])
        now_items = list(self.immediate)
        self._heap, self._tail, self.immediate = [], deque(), deque()
        self.held = self.held_bytes = 0
        for pkt in now_items:
            for part in fn(pkt):
                self.immediate.append(part)
                self.held += 1
                self.held_bytes += len(part)
        for tts, _seq, pkt in items:
            for part in fn(pkt):
                self._seq += 1
                self._tail.append((tts, self._seq, part))
                self.held += 1
                self.held_bytes += len(part)

    def drain(self) -> list[Packet]:
        """Everything held, in sending order (a stage being removed hands its backlog on)."""
        out: list[Packet] = list(self.immediate)
        self.immediate.clear()
        while self._peek() is not None:
            out.append(self._pop())
        self.held = self.held_bytes = 0
        self.max_tts = None
        return out
