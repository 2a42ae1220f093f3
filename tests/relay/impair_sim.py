"""Drive an impairment stage on a virtual clock: packets in at chosen times, departures out."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from tunlab.relay._stats import IMPAIR_FIELDS
from tunlab.relay.impair._model import Netem
from tunlab.relay.impair._stage import ImpairStage


def probe(seq: int, size: int = 100, *, tos: int = 0) -> bytes:
    """An IPv4/UDP packet carrying seq (valid IPv4 header checksum)."""
    total = max(size, 32)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, 0, 0, 64, 17, 0, bytes([198, 18, 0, 1]),
                                bytes([198, 18, 0, 2])))  # fmt: skip
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", hdr, 10, ~s & 0xFFFF)
    udp = struct.pack("!HHHH", 1000, 2000, total - 20, 0)
    body = struct.pack("!Q", seq).ljust(total - 28, b"\0")
    return bytes(hdr) + udp + body


def seq_of(pkt: bytes) -> int:
    return int(struct.unpack_from("!Q", pkt, 28)[0])


@dataclass
class Run:
    departures: list[tuple[int, bytes]] = field(default_factory=list)  # (ns, packet)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def seqs(self) -> list[int]:
        return [seq_of(p) for _, p in self.departures]

    @property
    def times(self) -> list[int]:
        return [t for t, _ in self.departures]

    def by_seq(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for t, p in self.departures:
            out.setdefault(seq_of(p), []).append(t)
        return out


def simulate(
    netem: Netem | dict[str, Any],
    arrivals: list[tuple[int, bytes]] | None = None,
    *,
    n: int = 100,
    gap_ns: int = 1_000_000,
    size: int = 100,
    drain: bool = True,
) -> Run:
    """Feed packets at their times (default: n probes every gap_ns), run every deadline exactly."""
    if isinstance(netem, dict):
        netem = Netem.model_validate(netem)
    stage = ImpairStage(netem.params())
    stage.attach(l2=False, counters=None)
    if arrivals is None:
        arrivals = [(i * gap_ns, probe(i, size)) for i in range(n)]
    run = Run()
    i = 0
    now = 0
    while i < len(arrivals) or (drain and stage.next_deadline() is not None):
        due = stage.next_deadline()
        next_arrival = arrivals[i][0] if i < len(arrivals) else None
        due_ns = None if due is None else round(due * 1e9)
        if next_arrival is not None and (due_ns is None or next_arrival <= due_ns):
            now = next_arrival
            batch = []
            while i < len(arrivals) and arrivals[i][0] == now:
                batch.append(arrivals[i][1])
                i += 1
            out = stage.process(batch, now / 1e9)
        else:
            assert due_ns is not None
            now = max(now, due_ns)
            out = stage.process([], now / 1e9)
        run.departures += [(now, bytes(p)) for p in out]
    run.counters = dict(zip(IMPAIR_FIELDS, stage.counters.tolist(), strict=False))
    return run
