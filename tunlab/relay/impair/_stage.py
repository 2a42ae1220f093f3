"""The impairment as a relay stage: netem's queue, then the token-bucket shaper, per direction.

Packets arrive split from super-packets (the pump re-coalesces what leaves together), so loss,
delay and reordering apply per wire packet. The stage is rebuilt from a plain spec in a worker
process, and reconfigured in place at run time (held packets stay queued).
"""

from __future__ import annotations

import array
from typing import Any

from tunlab.devices.offload._gso import packets_of
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN
from tunlab.relay._stages import Packet, Stage, register_stage
from tunlab.relay._stats import ACTIVE, BACKLOG, BACKLOG_BYTES, GENERATION, IMPAIR_WORDS, SENT, SENT_BYTES
from tunlab.relay.impair._netem import NetemQueue
from tunlab.relay.impair._params import NetemParams
from tunlab.relay.impair._tbf import Shaper

KIND = "impair"


class ImpairStage(Stage):
    """netem + tbf on one direction; `configure()` swaps the settings while it runs."""

    switches = True

    def __init__(self, params: NetemParams, *, generation: int = 0) -> None:
        self.params = params
        self.generation = generation
        self.l2 = False
        self.frames_ok = False  # the pump can hand over whole frames (passthrough)
        self.virtio = False
        self.whole = False  # holding whole frames now (a delay-only impairment)
        self.counters: memoryview = memoryview(array.array("Q", bytes(8 * IMPAIR_WORDS)))
        self.netem: NetemQueue | None = None
        self.shaper: Shaper | None = None

    # ---- Stage ------------------------------------------------------------------------------
    def attach(
        self, *, l2: bool, counters: memoryview | None, frames: bool = False, virtio: bool = False
    ) -> None:
        """Bind the stage to its pump: L2 or L3 packets, its counter words, whole frames or packets."""
        if counters is not None:
            counters[:] = self.counters  # what was counted before (a reattached stage) carries over
            self.counters = counters
        self.l2 = l2
        self.frames_ok = frames
        self.virtio = virtio
        self.whole = frames and self.params.fate_per_frame
        self.counters[GENERATION] = self.generation
        self.counters[ACTIVE] = 1

    @property
    def needs_packets(self) -> bool:  # type: ignore[override]
        """Packets split from super-packets, unless only a fixed delay is set: then every segment
        shares one fate and one send time, and whole frames cross (no split, no coalesce)."""
        return not self.whole

    @property
    def engaged(self) -> bool:
        """Has work: an impairment is set, or packets are still held from one."""
        if self.params.active:
            return True
        return bool((self.netem and self.netem.held) or (self.shaper and self.shaper.queue))

    def process(self, packets: list[Packet], now: float) -> list[Packet]:
        """Impair a batch: what leaves now (the rest is held until its send time)."""
        t = round(now * 1e9)
        netem = self.netem
        if netem is None:
            netem = self.netem = NetemQueue(self.params, self.counters, l2=self.l2, now_ns=t)
            if self.params.shaper is not None:
                self.shaper = Shaper(self.params.shaper, self.counters, t)
        # the kernel runs the queue after every enqueue: what is due at once leaves before the
        # next packet of the same batch is counted against a limit
        out: list[Packet] = []
        if self.params.active or netem.held:
            enqueue, dequeue = netem.enqueue, netem.dequeue
            for pkt in packets:
                enqueue(pkt, t)
                dequeue(t, out)
            if not packets:
                dequeue(t, out)
        else:
            out = packets
        shaper = self.shaper
        if shaper is not None:
            passed, out = out, []
            for pkt in passed:
                shaper.enqueue(pkt, t)
                shaper.dequeue(t, out)
            if not passed:
                shaper.dequeue(t, out)
        c = self.counters
        c[SENT] += len(out)
        c[SENT_BYTES] += sum(map(len, out))
        c[BACKLOG] = netem.held + (len(shaper.queue) if shaper else 0)
        c[BACKLOG_BYTES] = netem.held_bytes + (shaper.backlog_bytes if shaper else 0)
        return out

    def next_deadline(self) -> float | None:
        """When the next held packet is due (monotonic seconds), or None."""
        due = [w for w in (self.netem.next_wakeup() if self.netem else None,
                           self.shaper.next_wakeup() if self.shaper else None) if w is not None]  # fmt: skip
        return min(due) / 1e9 if due else None

    def spec(self) -> dict[str, Any]:
        """The stage as a plain spec a worker process can rebuild it from."""
        return {"kind": KIND, "params": self.params.to_json(), "generation": self.generation}

    def reconfigure(self, spec: dict[str, Any], now: float) -> None:
        """New settings from a spec (tc change): queues, counters and random streams carry over."""
        params = NetemParams.from_json(spec["params"])
        t = round(now * 1e9)
        self.params = params
        whole = self.frames_ok and params.fate_per_frame
        if whole != self.whole:
            self._convert_held(to_frames=whole)
            self.whole = whole
        if self.netem is not None:
            self.netem.configure(params, t)
        if params.shaper is None:
            if self.shaper is not None and self.netem is not None:
                for pkt in self.shaper.drain():  # what waited for credit goes out next
                    self.netem.immediate.append(pkt)
                    self.netem.held += 1
                    self.netem.held_bytes += len(pkt)
            self.shaper = None
        elif self.shaper is None:
            if self.netem is not None:
                self.shaper = Shaper(params.shaper, self.counters, t)
        else:
            self.shaper.configure(params.shaper, t)
        self.generation = int(spec.get("generation", self.generation + 1))
        self.counters[GENERATION] = self.generation

    def _convert_held(self, *, to_frames: bool) -> None:
        """Held items change form with the mode: frames split into their packets, or packets
        given the (empty) virtio-net header a frame carries; send times stay."""
        if self.netem is None or not self.netem.held:
            return
        if to_frames:
            prefix = bytes(VIRTIO_NET_HDR_LEN) if self.virtio else b""
            self.netem.convert(lambda pkt: [prefix + bytes(pkt)])
            return
        if not self.virtio:
            return  # without the header a frame is a packet already
        l2 = self.l2
        self.netem.convert(lambda frame: list(packets_of(frame, l2)))


def _build(spec: dict[str, Any]) -> Stage:
    return ImpairStage(NetemParams.from_json(spec["params"]), generation=int(spec.get("generation", 0)))


register_stage(KIND, _build)
