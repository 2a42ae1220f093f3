"""VM nodes: boot to ready (a lab vs bare qemu of the same kernel to the same point, the agent's
READY), exec latency, netns <-> VM TCP throughput with and without offload, qemu RSS."""

from __future__ import annotations

import shutil
import socket
import statistics
import sys
import threading
import time

from tunlab import traffic
from tunlab._vm import images, qemu
from tunlab._vm.agent import Agent
from tunlab.topologies import Lab, load_text


def lab_text(n: int, image: str, offload: bool = True) -> str:
    nodes = "\n".join(
        f"  g{i}: {{kind: vm, image: {image}, interfaces: {{eth0: {{ipv4: [198.18.{150 + i}.2/24], "
        f"offload: {str(offload).lower()}}}}}}}"
        for i in range(n)
    )
    hosts = "\n".join(f"      eth{i}: {{ipv4: [198.18.{150 + i}.1/24]}}" for i in range(n))
    links = "\n".join(f'  - endpoints: ["h:eth{i}", "g{i}:eth0"]' for i in range(n))
    return f"name: vmbench\nnodes:\n  h:\n    interfaces:\n{hosts}\n{nodes}\nlinks:\n{links}\n"


def bare_boot(image: images.Image, n: int) -> float:
    """n bare qemu guests at once (same kernel, initramfs and root), until every agent is ready."""
    root = image.rootfs
    procs = []
    start = time.monotonic()
    for i in range(n):
        g = qemu.Guest(
            name=f"tlbench-bare-{i}",
            kernel=image.kernel,
            initrd=image.initrd,
            append=f"console=ttyS0 panic=-1 quiet tunlab.root={'image' if root else 'initramfs'}",
            root_image=root,
        )
        procs.append(qemu.Process(g))
    agents = [Agent(p.agent_sock, f"bare{i}") for i, p in enumerate(procs)]
    ok = all(a.wait_ready(180) for a in agents)
    took = time.monotonic() - start
    for p in procs:
        p.stop()
    return took if ok else float("nan")


def lab_boot(n: int, image: str) -> float:
    start = time.monotonic()
    with Lab(load_text(lab_text(n, image), "yaml"), unique=True):
        return time.monotonic() - start


def exec_latency(lab: Lab) -> float:
    g = lab.node("g0")
    g.run(["true"])
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        g.run(["true"])
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def guest_to_host_mbps(lab: Lab, blocks: int = 1000) -> float:
    """dd | nc from the guest to a host socket; the host closes after the last byte, which is
    what ends busybox nc (it does not close on its stdin's EOF)."""
    h = lab.node("h")
    srv = h.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("198.18.150.1", 7100))
    srv.listen(1)
    got = [0]

    expected = blocks * 65536

    def drain() -> None:
        conn, _ = srv.accept()
        with conn:
            while got[0] < expected and (data := conn.recv(1 << 20)):
                got[0] += len(data)

    t = threading.Thread(target=drain)
    t.start()
    start = time.monotonic()
    lab.node("g0").run(["sh", "-c", f"dd if=/dev/zero bs=65536 count={blocks} 2>/dev/null | nc 198.18.150.1 7100"],
                       timeout=300)  # fmt: skip
    took = time.monotonic() - start
    t.join(10)
    srv.close()
    return got[0] * 8 / took / 1e6


def main() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu is not installed: VM benchmarks skipped")
        return
    rows = ["| measure | minimal | debian |", "|---|---:|---:|"]
    results: dict[str, dict[str, str]] = {}
    for image in ("minimal", "debian"):
        try:
            img = images.ensure(image, say=lambda text: print(f"  {text}", file=sys.stderr))
        except Exception as exc:
            results.setdefault("error", {})[image] = str(exc)[:60]
            continue
        r = results.setdefault(image, {})
        for n in (1, 4):
            bare = bare_boot(img, n)
            lab = lab_boot(n, image)
            r[f"boot {n}"] = f"{lab:.1f} s (bare qemu {bare:.1f} s, {lab / bare:.2f}x)"
        with Lab(load_text(lab_text(1, image), "yaml"), unique=True) as lab1:
            r["exec"] = f"{exec_latency(lab1):.0f} ms"
            pid = lab1.node("g0").process.pid  # type: ignore[attr-defined]
            r["rss"] = f"{rss_mib(pid):.0f} MiB"
            r["tcp on"] = f"{guest_to_host_mbps(lab1):.0f} Mbit/s"
            r["tcp h->g on"] = (
                f"{traffic.tcp_stream(lab1.node('h'), lab1.node('g0'), '198.18.150.2', nbytes=64 << 20).gbps * 1000:.0f} Mbit/s"
            )
        with Lab(load_text(lab_text(1, image, offload=False), "yaml"), unique=True) as lab0:
            r["tcp off"] = f"{guest_to_host_mbps(lab0):.0f} Mbit/s"
            r["tcp h->g off"] = (
                f"{traffic.tcp_stream(lab0.node('h'), lab0.node('g0'), '198.18.150.2', nbytes=64 << 20).gbps * 1000:.0f} Mbit/s"
            )
    labels = {
        "boot 1": "boot to ready, 1 VM (lab up)",
        "boot 4": "boot to ready, 4 VMs at once (lab up)",
        "exec": "exec latency (median of 20 `true`)",
        "rss": "qemu RSS per VM (-m 256)",
        "tcp on": "TCP guest -> host, offload on (dd | nc)",
        "tcp off": "TCP guest -> host, offload off",
        "tcp h->g on": "TCP host -> guest, offload on (tcp_stream)",
        "tcp h->g off": "TCP host -> guest, offload off",
    }
    for key, label in labels.items():
        rows.append(
            f"| {label} | {results.get('minimal', {}).get(key, '-')} | {results.get('debian', {}).get(key, '-')} |"
        )
    print("\n".join(rows))
    if "error" in results:
        print(f"\nnot measured: {results['error']}")


if __name__ == "__main__":
    main()
