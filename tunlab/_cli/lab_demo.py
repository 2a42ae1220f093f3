"""`make demo`: the built-in lab comes up, traffic crosses it, a report is printed, it goes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any

from rich.console import Console
from rich.table import Table

from tunlab import traffic
from tunlab.relay._direction import Direction
from tunlab.topologies._lab import Lab
from tunlab.topologies._loader import load_text
from tunlab.topologies._state import owned_namespaces

DEMO = "demo.yaml"


def demo_topology_text() -> str:
    return resources.files("tunlab.topologies._builtin").joinpath(DEMO).read_text()


def run(console: Console, progress: Callable[[str], AbstractContextManager[Any]]) -> bool:
    topo = load_text(demo_topology_text(), "yaml", "builtin:demo.yaml")
    console.print("[bold]tunlab demo[/]: h1 —veth— r1 ==tun-pair (offload)== h2\n")
    lab = Lab(topo, unique=True)
    with progress(f"up {lab.name}") as bar:
        lab.progress = bar
        lab.up()
    ok = True
    try:
        console.print(f"lab [cyan]{lab.name}[/] is up: {len(lab.nodes)} nodes, namespaces tl-{lab.id}-*")
        h1, h2 = lab.node("h1"), lab.node("h2")
        table = Table(title="reachability (ping from h1)", title_justify="left")
        for col in ("target", "sent", "received", "avg rtt"):
            table.add_column(col)
        for target in ("198.18.1.1", "198.18.2.2", "2001:db8:2::2"):
            res = traffic.ping(h1, target, count=3)
            ok &= res.reachable
            rtt = f"{res.rtt_avg_ms:.3f} ms" if res.rtt_avg_ms is not None else "-"
            table.add_row(target, str(res.sent), str(res.received), rtt)
        console.print(table)

        before = lab.relay_stats()
        stream = traffic.tcp_stream(h1, h2, "198.18.2.2", duration=3.0)
        after = lab.relay_stats()
        ok &= stream.exact
        console.print(
            f"TCP h1 -> h2 for {stream.seconds:.1f} s: {stream.received_bytes / 1e6:.0f} MB, "
            f"[bold]{stream.gbps:.2f} Gbit/s[/], byte-exact: {'yes' if stream.exact else '[red]NO[/]'}"
        )
        key = next(iter(after))
        now, then = after[key][Direction.A_TO_B], before[key][Direction.A_TO_B]
        frames, supers, nbytes = (now[f] - then[f] for f in ("frames_in", "super_frames_in", "bytes_in"))
        avg = nbytes / frames if frames else 0
        ok &= supers > 0
        console.print(
            f"tun-pair {key}: {frames} frames crossed r1 -> h2, [bold]{supers} of them GSO super-packets[/], "
            f"{avg / 1000:.1f} KB per frame on average (MTU 1500)"
        )
    finally:
        problems = lab.down()
    left = owned_namespaces(lab.id)
    console.print(
        f"lab torn down: {'nothing left' if not left and not problems else f'LEFT: {left} {problems}'}"
    )
    verdict = "[green]OK[/]" if ok and not left else "[red]FAILED[/]"
    console.print(f"{verdict}: {'every check passed' if ok else 'a check failed'}")
    return ok and not left and not problems
