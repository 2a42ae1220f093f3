"""Container nodes: time until a container node is ready, against a bare `docker run` of the
same image (docker SDK, network none, waited until running), and a 20-container lab brought
up in parallel against 20 bare runs one after another. One invocation, interleaved rounds."""

from __future__ import annotations

import os
import statistics
import sys
import time

from tunlab.topologies import Lab, load_text
from tunlab.topologies._containers import docker_client
from tunlab.topologies._images import BASE_IMAGE, build_base_image

ONE = """
name: one
nodes:
  h1: {interfaces: {eth0: {ipv4: [198.18.50.1/24]}}}
  c1: {kind: container, image: tunlab/base, interfaces: {eth0: {ipv4: [198.18.50.2/24]}}}
links:
  - endpoints: ["h1:eth0", "c1:eth0"]
"""


def many(n: int) -> str:
    lines = ["name: many", "nodes:", "  h0: {}"]
    for i in range(n):
        lines.append(
            f"  c{i}: {{kind: container, image: tunlab/base, interfaces: {{eth0: {{ipv4: [198.18.{60 + i}.2/24]}}}}}}"
        )
    lines.append("links:")
    for i in range(n):
        lines.append(
            f'  - endpoints: [{{node: h0, interface: e{i}, ipv4: [198.18.{60 + i}.1/24]}}, "c{i}:eth0"]'
        )
    return "\n".join(lines) + "\n"


def bare_run(client, name: str) -> float:
    t0 = time.perf_counter()
    c = client.containers.run(
        BASE_IMAGE, ["sleep", "infinity"], name=name, detach=True, network_mode="none", init=True
    )
    c.reload()
    while c.status != "running":
        time.sleep(0.005)
        c.reload()
    elapsed = time.perf_counter() - t0
    c.remove(force=True)
    return elapsed


def lab_up(text: str) -> float:
    lab = Lab(load_text(text, "yaml"), unique=True)
    t0 = time.perf_counter()
    lab.up()
    elapsed = time.perf_counter() - t0
    lab.down()
    return elapsed


def main() -> None:
    client = docker_client()
    build_base_image(client)
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    n = int(os.environ.get("BENCH_CONTAINERS", "20"))
    bare, one, twenty, serial = [], [], [], []
    for r in range(repeat):
        print(f"  round {r + 1}/{repeat}", file=sys.stderr, flush=True)
        bare.append(bare_run(client, f"tlbench-bare-{os.getpid()}-{r}"))
        one.append(lab_up(ONE))
        twenty.append(lab_up(many(n)))
        serial.append(sum(bare_run(client, f"tlbench-bare-{os.getpid()}-{r}-{i}") for i in range(n)))
    b, o, t, s = (statistics.median(x) for x in (bare, one, twenty, serial))
    print("| | seconds (median) |")
    print("|---|---:|")
    print(f"| bare `docker run` (SDK, network none) until running | {b:.3f} |")
    print(f"| tunlab lab with one container node (veth, address) until up | {o:.3f} |")
    print(f"| overhead per container node | **{o - b:+.3f}** |")
    print(f"| {n} bare `docker run`s one after another | {s:.2f} |")
    print(f"| tunlab lab with {n} container nodes ({n} veth links) until up | {t:.2f} |")
    print(f"\n{n} containers come up {s / t:.1f}x faster than one by one ({t / n:.3f} s per node).")


if __name__ == "__main__":
    main()
