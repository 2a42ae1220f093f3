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


def main() -> None:
    print("| operation | compiled (µs) | pure Python (µs) | pure + numpy (µs) | compiled vs best pure |")
    print("|---|---:|---:|---:|---:|")
    for name, compiled, pure, numpy in run():
        best = min(pure, numpy) if numpy is not None else pure
        np_text = f"{numpy:.1f}" if numpy is not None else "-"
        print(f"| {name} | {compiled:.1f} | {pure:.1f} | {np_text} | {best / compiled:.1f}x faster |")


if __name__ == "__main__":
    main()
