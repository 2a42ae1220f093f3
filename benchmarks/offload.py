"""Split and coalesce of one 64 KB super-packet, compiled against the pure Python (and numpy).

45 TCPv4 segments of 1448 bytes (timestamps on): split() makes the segments with every
checksum, coalesce() merges them back after verifying each. Medians of many runs, in µs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tunlab import packets as pk
from tunlab.devices import offload
from tunlab.devices.offload import VirtioNetHdr, coalesce, ones_sum, split
from tunlab.devices.offload import _csum as csum


def _segments() -> list[bytes]:
    opts = b"\x01\x01\x08\x0a" + bytes(8)
    return [
        pk.tcp_packet(
            "198.18.0.1",
            "198.18.0.2",
            40000,
            80,
            bytes((i + j) & 0xFF for j in range(1448)),
            seq=1000 + i * 1448,
            ack=7,
            flags=0x10,
            options=opts,
            ident=100 + i,
        )
        for i in range(45)
    ]


def _time(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def run() -> list[tuple[str, float, float, float | None]]:
    segs = _segments()
    with offload.using("python"):
        (frame,) = coalesce(segs)
    hdr, body = VirtioNetHdr.decode(frame), frame[10:]
    data = bytes(range(256)) * 256
    cases: list[tuple[str, Callable[[], object]]] = [
        ("split of one 64 KB super-packet (45 segments)", lambda: split(hdr, body)),
        ("coalesce of its 45 segments", lambda: coalesce(segs)),
        ("ones_sum of 64 KB", lambda: ones_sum(data)),
    ]
    out = []
    for name, fn in cases:
        compiled = _time(fn, 400) if "compiled" in offload.available() else float("nan")
        with offload.using("python"):
            before = csum.accelerator()
            csum.set_accelerator("python")
            pure = _time(fn, 100)
            numpy: float | None = None
            try:
                csum.set_accelerator("numpy")
                numpy = _time(fn, 100)
            except RuntimeError:
                pass
            csum.set_accelerator(before)
        out.append((name, compiled, pure, numpy))
    return out


def batch_paths() -> list[tuple[str, float, float]]:
    """Per super-packet, the compiled core's work behind recv_multiple/send_multiple: with a
    list of buffers (split into bytes, queued, copied out; slices coalesced) against a
    PacketBatch (split straight into the arena; coalesced from it). Medians in µs."""
    from array import array

    from tunlab.devices import PacketBatch
    from tunlab.devices._batch import RxQueue, frames_to_send
    from tunlab.devices._layer import Layer

    fast = offload._impl.fast
    if fast is None:
        return []
    (frame,) = coalesce(_segments())
    bufs, sizes = [bytearray(10 + 65557) for _ in range(128)], [0] * 128
    views = [memoryview(b) for b in bufs]
    queue = RxQueue()

    def rx_lists() -> object:
        queue.feed(frame, vnet=True, layer=Layer.L3)
        return queue.drain_into(bufs, sizes, 10)

    def tx_lists() -> object:
        packets = [views[i][: 10 + sizes[i]] for i in range(45)]
        return frames_to_send(packets, 10, vnet=True, layer=Layer.L3, udp_gro=False, table=None)

    batch = PacketBatch()
    arena_sizes = array("I", bytes(4 * 128))

    def rx_arena() -> object:
        return fast.split_into(frame, 0, batch.arena, arena_sizes, 10, batch.slot_size, False)

    rx_arena()
    batch.count = 45
    batch.sizes[:] = arena_sizes

    def tx_arena() -> object:
        return frames_to_send(batch, 10, vnet=True, layer=Layer.L3, udp_gro=False, table=None)

    return [
        (
            "receive side: split into 45 packets in the caller's buffers",
            _time(rx_lists, 400),
            _time(rx_arena, 400),
        ),
        ("send side: coalesce 45 packets into one frame", _time(tx_lists, 400), _time(tx_arena, 400)),
    ]


def main() -> None:
    rows = batch_paths()
    if rows:
        print("| per 64 KB super-packet (compiled) | list of buffers (µs) | PacketBatch (µs) | ratio |")
        print("|---|---:|---:|---:|")
        for name, lists, arena in rows:
            print(f"| {name} | {lists:.1f} | {arena:.1f} | {lists / arena:.1f}x faster |")
        print()
    print("| operation | compiled (µs) | pure Python (µs) | pure + numpy (µs) | compiled vs best pure |")
    print("|---|---:|---:|---:|---:|")
    for name, compiled, pure, numpy in run():
        best = min(pure, numpy) if numpy is not None else pure
        np_text = f"{numpy:.1f}" if numpy is not None else "-"
        print(f"| {name} | {compiled:.1f} | {pure:.1f} | {np_text} | {best / compiled:.1f}x faster |")


if __name__ == "__main__":
    main()
