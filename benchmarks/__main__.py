"""`make bench`: run every benchmark in one invocation and print markdown tables.

Select with `python -m benchmarks relay ...`; BENCH_SECONDS / BENCH_REPEAT tune the relay runs.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys

SUITES = ["offload", "relay", "impair", "vm", "topology", "validate", "containers", "cluster", "soak"]


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("the benchmarks create namespaces and devices: run as root")
    chosen = sys.argv[1:] or SUITES
    print(f"machine: {machine()}\n")
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"## {name}\n")
        module.main()
        print()


if __name__ == "__main__":
    main()
