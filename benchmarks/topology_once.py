"""One timed run of the chain lab in a fresh interpreter (benchmarks/topology.py starts it with
the tree being measured first on PYTHONPATH, so `tunlab` is that tree's): prints
[up seconds, down seconds, ping ok] as JSON."""

from __future__ import annotations

import json
import sys
import time


def address(link: int, end: int) -> str:
    """The chain's address of end (1 or 2) of link."""
    return f"198.{18 + link // 256}.{link % 256}.{end}"


def run(chain: str, n: int, busy: bool) -> tuple[float, float, bool]:
    """Up, (with busy: a process started in every node, timed into up), ping, down."""
    from tunlab.topologies import Lab, load_file

    t0 = time.perf_counter()
    lab = Lab(load_file(chain, {"n": n}), unique=True)
    lab.up()
    started = [lab.node(f"n{i}").popen(["sleep", "600"]) for i in range(n)] if busy else []
    t_up = time.perf_counter() - t0
    ok = lab.node("n0").run(["ping", "-t", "255", "-c1", "-W3", address(n - 2, 2)]).code == 0
    t0 = time.perf_counter()
    lab.down()
    t_down = time.perf_counter() - t0
    for proc in started:  # a version without node cgroups leaves them running: not timed
        proc.kill()
        proc.wait()
    return t_up, t_down, ok


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")))
