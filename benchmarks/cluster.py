"""Labs across hosts, on the simulated three-host cluster (tunlab.cluster.SimulatedCluster):
a 30-node, 40-link lab with 13 cross-host links brought up, a cross-host tun-pair's TCP, and
how soon a killed worker is reported — each beside the same lab on one machine (a host of the
simulation running it alone), interleaved, BENCH_REPEAT rounds (default 3)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLIENT = str(Path(__file__).resolve().parents[1] / "tests" / "cluster" / "client.py")


def _json(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-3000:])
    return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def _lost_after(sim: Any) -> float:
    """Kill h3's worker under a running lab: seconds until the lab reports it (then restart)."""
    proc = sim.client_ns.popen(
        [sys.executable, CLIENT, "watch", "bench-lose"],
        env=sim.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())  # ready
    killed = time.time()
    sim.kill("h3")
    out = json.loads(proc.stdout.readline())
    proc.wait(60)
    sim.run_on("h3", [sys.executable, "-m", "tunlab._cli.main", "gc"])
    sim.start_worker("h3")
    sim.wait_for_workers(["h3"])
    return float(out["seen_at"]) - killed


def main() -> None:
    from tunlab.cluster import SimulatedCluster

    rounds = int(os.environ.get("BENCH_REPEAT", "3"))
    spread: dict[str, list[float]] = {}
    with SimulatedCluster(3) as sim:
        for _ in range(rounds):
            across = _json(sim.run_client([sys.executable, CLIENT, "big"], timeout=600))
            alone = _json(sim.run_on("h1", [sys.executable, CLIENT, "local"], timeout=600))
            for key, value in (
                ("up across 3 hosts (s)", across["up_s"]),
                ("up on one host (s)", alone["up_s"]),
                ("TCP across hosts (Gbit/s)", across["tcp_gbit"]),
                ("TCP on one host (Gbit/s)", alone["tcp_gbit"]),
                ("one-way delay set 50 ms (ms)", across["one_way_ms"]),
                ("loss set 10% over 1,000 (%)", across["loss_percent"]),
                ("lost host reported after (s)", _lost_after(sim)),
            ):
                spread.setdefault(key, []).append(float(value))
    print("| measure | median | min | max |")
    print("|---|---|---|---|")
    for key, values in spread.items():
        print(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    up = statistics.median(spread["up across 3 hosts (s)"]) / statistics.median(spread["up on one host (s)"])
    tcp = statistics.median(spread["TCP across hosts (Gbit/s)"]) / statistics.median(
        spread["TCP on one host (Gbit/s)"]
    )
    print(f"\nratios: bring-up across hosts / one host {up:.2f}x; TCP across hosts / one host {tcp:.2f}x")


if __name__ == "__main__":
    main()
