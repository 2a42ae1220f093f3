"""Soak: 200 up/down cycles of the demo lab, then 8 labs up and down in parallel, 5 times.

Reports fds, namespaces, processes and RSS of this process before and after each phase: all
of them must be flat (a leak shows as growth; RSS may settle by up to 16 MiB after the warm-up). Not part of `make test` (it takes minutes).
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import time
from pathlib import Path

from tunlab._linux.netns import list_named_netns
from tunlab.topologies import Lab, load_file

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
CYCLES = int(os.environ.get("SOAK_CYCLES", "200"))
PARALLEL = int(os.environ.get("SOAK_PARALLEL", "8"))
RSS_SLACK_MIB = 16  # RSS growth after the warm-up that is not counted as a leak


def sample() -> dict[str, int]:
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    children = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        children += 1
            except (OSError, ValueError, IndexError):
                pass
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "namespaces": len(list_named_netns()),
        "child processes": children,
        "threads": len(os.listdir("/proc/self/task")),
        "RSS MiB": rss >> 20,
    }


def cycle(i: int) -> float:
    start = time.perf_counter()
    with Lab(load_file(DEMO), unique=True) as lab:
        assert lab.node("h1").run(["ping", "-c1", "-W2", "198.18.2.2"]).ok, f"cycle {i}: no ping"
    return time.perf_counter() - start


def table(rows: list[tuple[str, dict[str, int]]]) -> str:
    keys = list(rows[0][1])
    lines = ["| when | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {when} | " + " | ".join(str(v[k]) for k in keys) + " |" for when, v in rows]
    return "\n".join(lines)


def main() -> None:
    rows = [("before", sample())]
    cycle(-1)  # warm up: imports, the first netlink sessions
    rows.append(("after 1 warm-up cycle", sample()))
    times = [cycle(i) for i in range(CYCLES)]
    rows.append((f"after {CYCLES} up/down cycles", sample()))
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for r in range(5):
            list(pool.map(cycle, range(r * PARALLEL, (r + 1) * PARALLEL)))
    rows.append((f"after 5 x {PARALLEL} labs in parallel", sample()))
    print(table(rows))
    times.sort()
    print(
        f"\none cycle (up, ping, down): median {times[len(times) // 2]:.2f} s, "
        f"max {times[-1]:.2f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MiB"
    )
    grew = {k: rows[-1][1][k] - rows[1][1][k] for k in rows[1][1] if k != "RSS MiB"}
    # memory: allocator arenas and thread stacks settle in the first cycles; a leak grows on
    rss_grew = rows[-1][1]["RSS MiB"] - rows[1][1]["RSS MiB"]
    if rss_grew > RSS_SLACK_MIB:
        grew["RSS MiB"] = rss_grew
    print("flat: " + ("yes" if not any(grew.values()) else f"NO, grew {grew}"))


if __name__ == "__main__":
    main()
