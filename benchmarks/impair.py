"""Delay accuracy of an impaired relay: when packets leave vs when they were scheduled to.

Two TUN devices in two namespaces, a relay between them with `delay 10ms`, paced UDP probes
(their own sender process, kernel receive timestamps) at 10 k and 100 k packets/s; the error
is the measured one-way delay minus 10 ms. The same probes through the unimpaired relay give
the path's own latency, reported alongside.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tunlab import DeviceBuilder, traffic
from tunlab._linux.netns import NetNamespace
from tunlab.relay import Relay
from tunlab.relay.impair._model import Netem

RATES = (10_000, 100_000)
SECONDS = 2


@contextlib.contextmanager
def pair(tag: str) -> Iterator[tuple[NetNamespace, NetNamespace, object, object]]:
    a = NetNamespace.create(f"tlbench-{os.getpid()}-{tag}-a")
    b = NetNamespace.create(f"tlbench-{os.getpid()}-{tag}-b")
    devs = []
    try:
        for name, ns, net, peer in (
            ("tuna", a, "198.18.104", "198.18.105"),
            ("tunb", b, "198.18.105", "198.18.104"),
        ):
            dev = DeviceBuilder().name(name).offload(True).ipv4(f"{net}.1", 24).netns(ns).build_sync()
            devs.append(dev)
            with ns.iproute() as ipr:
                ipr.route("add", dst=f"{peer}.0/24", oif=dev.if_index)
        yield a, b, devs[0], devs[1]
    finally:
        for d in devs:
            d.close()
        a.delete()
        b.delete()


def _errors(res: traffic.OneWayResult, delay_ms: float) -> tuple[float, float]:
    errs = sorted((d - delay_ms) * 1000 for d in res.delays_ms)  # microseconds
    return errs[len(errs) // 2], errs[min(len(errs) - 1, int(len(errs) * 0.99))]


def run() -> list[str]:
    rows = [
        "| workers | rate (packets/s) | delivered | unimpaired p50 / p99 (µs) | delay 10 ms: error p50 / p99 (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for workers in ("processes", "threads"):
        for rate in RATES:
            with (
                pair(f"{workers[0]}{rate}") as (a, b, da, db),
                Relay(da, db, workers=workers, impairable=True) as relay,  # type: ignore[arg-type]
            ):
                pa, pb = traffic.place(a), traffic.place(b)
                n = rate * SECONDS
                traffic.one_way(pa, pb, "198.18.105.1", count=200, rate_pps=1000)  # warm up
                base = traffic.one_way(pa, pb, "198.18.105.1", count=n, rate_pps=rate, settle=0.3)
                relay.impair(Netem(delay="10ms", limit=100_000).params())
                res = traffic.one_way(pa, pb, "198.18.105.1", count=n, rate_pps=rate, settle=0.3)
            b50, b99 = _errors(base, 0.0)
            e50, e99 = _errors(res, 10.0)
            rows.append(
                f"| {workers} | {rate:,} | {res.received / res.sent:.1%} | {b50:.0f} / {b99:.0f} | {e50:.0f} / {e99:.0f} |"
            )
    return rows


def main() -> None:
    print("\n".join(run()))


if __name__ == "__main__":
    main()
