"""Relay benchmark (the tun-benchmark2 method): two TUN devices in two namespaces, one relay
process between them, iperf3 across. Every variant runs in the same invocation, so ratios
compare like with like on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunlab import DeviceBuilder, traffic
from tunlab._linux.netns import NetNamespace

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
CLK_TCK = os.sysconf("SC_CLK_TCK")
A_NET, B_NET = "198.18.102", "198.18.103"


@dataclass
class Result:
    name: str
    gbps: float
    retransmits: int
    relay_cpu: float | None  # % of one core (user + system)
    note: str = ""
    relay_usr: float | None = None  # % of one core spent in user space (the interpreter)


def c_relay() -> Path:
    """Compile the minimal C relay (the native ceiling) at bench time."""
    BUILD.mkdir(exist_ok=True)
    exe = BUILD / "tunrelay"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(HERE / "tunrelay.c")], check=True)
    return exe


def _cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """(user, system) clock ticks of every thread of these processes."""
    usr = sys_ = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                usr += int(fields[11])
                sys_ += int(fields[12])
    return usr, sys_


@contextlib.contextmanager
def two_namespaces(tag: str) -> Iterator[tuple[NetNamespace, NetNamespace]]:
    a = NetNamespace.create(f"tlbench-{os.getpid()}-{tag}-a")
    b = NetNamespace.create(f"tlbench-{os.getpid()}-{tag}-b")
    try:
        yield a, b
    finally:
        a.delete()
        b.delete()


def _configure(ns: NetNamespace, ifname: str, addr: str, peer_net: str) -> None:
    with ns.iproute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=idx, address=addr, prefixlen=24)
        ipr.link("set", index=idx, state="up")
        if peer_net:
            ipr.route("add", dst=peer_net, oif=idx)


def iperf(
    a: NetNamespace, b: NetNamespace, server_addr: str, seconds: int, parallel: int = 1
) -> tuple[float, int]:
    """iperf3 from a to b once the path answers pings: (Gbit/s received, retransmits)."""
    for _ in range(50):
        if a.run(["ping", "-c1", "-W1", server_addr], timeout=5).returncode == 0:
            break
        time.sleep(0.1)
    report = traffic.iperf3(
        traffic.place(a), traffic.place(b), server_addr, seconds=seconds, parallel=parallel
    )
    end = report["end"]
    return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0))


def veth_ceiling(seconds: int) -> Result:
    with two_namespaces("veth") as (a, b):
        with a.iproute() as ipr:
            ipr.link("add", ifname="veth-a", kind="veth", peer={"ifname": "veth-b", "net_ns_fd": b.path})
        _configure(a, "veth-a", f"{A_NET}.1", "")
        _configure(b, "veth-b", f"{A_NET}.2", "")
        gbps, retr = iperf(a, b, f"{A_NET}.2", seconds)
        return Result("(1) veth pair, no relay (kernel ceiling)", gbps, retr, None)


def relay_run(
    name: str,
    argv_for: object,
    offload: bool,
    seconds: int,
    *,
    own_devices: bool = False,
    env: dict[str, str] | None = None,
    streams: int = 1,
    multi_queue: bool = False,
    windows: bool = False,
) -> Result:
    with two_namespaces(str(abs(hash(name)) % 10000)) as (a, b):
        if windows:  # room for a 20 ms RTT at line rate: 64 MiB socket buffers
            for ns in (a, b):
                for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
                    ns.write_sysctl(key, "4096 131072 67108864")
                for key in ("net.core.rmem_max", "net.core.wmem_max"):
                    with contextlib.suppress(OSError):
                        ns.write_sysctl(key, "67108864")
        pass_fds: tuple[int, ...] = ()
        devs = []
        if not own_devices:
            devs = [
                DeviceBuilder()
                .name("tuna")
                .offload(offload)
                .multi_queue(multi_queue)
                .netns(a.name)
                .build_sync(),
                DeviceBuilder()
                .name("tunb")
                .offload(offload)
                .multi_queue(multi_queue)
                .netns(b.name)
                .build_sync(),
            ]
            pass_fds = tuple(d.fileno() for d in devs)
            argv = argv_for(*pass_fds)  # type: ignore[operator]
        else:
            argv = argv_for(a.name, b.name)  # type: ignore[operator]
        proc = subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            stdout=subprocess.PIPE,
            cwd=HERE.parent,
            env={**os.environ, **(env or {})},
        )
        pids = [proc.pid]
        try:
            line = proc.stdout.readline().decode().split() if proc.stdout else []
            if not line or line[0] != "READY":
                raise RuntimeError(f"{name}: relay did not start")
            pids += [int(x) for x in line[1:]]
            for d in devs:
                d.close()  # the relay holds the only fds now
            _configure(a, "tuna", f"{A_NET}.1", f"{B_NET}.0/24")
            _configure(b, "tunb", f"{B_NET}.1", f"{A_NET}.0/24")
            t0, (u0, s0) = time.monotonic(), _cpu_ticks(pids)
            gbps, retr = iperf(a, b, f"{B_NET}.1", seconds, streams)
            u1, s1 = _cpu_ticks(pids)
            wall = time.monotonic() - t0
            cpu = (u1 - u0 + s1 - s0) / CLK_TCK / wall * 100
            return Result(name, gbps, retr, cpu, relay_usr=(u1 - u0) / CLK_TCK / wall * 100)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            proc.wait()


def run(seconds: int = 10, repeat: int = 3) -> list[Result]:
    """Every variant `repeat` times, interleaved (so drift hits all alike); medians reported."""
    py = sys.executable
    exe = c_relay()

    def worker(mode: str) -> object:
        return lambda fa, fb: [py, "-m", "benchmarks.relay_worker", mode, str(fa), str(fb)]

    def c(fa: int, fb: int) -> list[str]:
        return [str(exe), str(fa), str(fb)]

    pure = {"TUNLAB_PURE": "1"}
    runs: list[tuple[str, object, bool, bool] | tuple[str, object, bool, bool, dict[str, object]]] = [
        ("(2a) C relay, plain", c, False, False),
        ("(2b) C relay, vnet header (offload)", c, True, False),
        ("(3) tunlab relay, plain (process workers)", worker("processes"), False, False),
        ("(3t) tunlab relay, plain (thread workers)", worker("threads"), False, False),
        (
            "(4) tunlab relay, super-packets passed through (process workers)",
            worker("processes"),
            True,
            False,
        ),
        (
            "(4t) tunlab relay, super-packets passed through (thread workers)",
            worker("threads"),
            True,
            False,
        ),
        (
            "(4i) as (4), with the impairment stage in place (none set)",
            worker("impairable-processes"),
            True,
            False,
        ),
        (
            "(4ti) as (4t), with the impairment stage in place (none set)",
            worker("impairable-threads"),
            True,
            False,
        ),
        (
            "(4w) as (4), 64 MiB TCP windows",
            worker("processes"),
            True,
            False,
            {"windows": True},
        ),
        (
            "(4d) as (4w), delay 10 ms each way (20 ms RTT)",
            worker("delay10-processes"),
            True,
            False,
            {"windows": True},
        ),
        ("(5) tunlab relay, split + coalesce (batch mode, thread workers)", worker("batch"), True, False),
        (
            "(5p) tunlab relay, split + coalesce (batch mode, process workers)",
            worker("batch-processes"),
            True,
            False,
        ),
        (
            "(5a) a user's loop: recv_multiple/send_multiple with a PacketBatch",
            worker("api-batch"),
            True,
            False,
        ),
        (
            "(5b) a user's loop: recv_multiple/send_multiple with lists of buffers",
            worker("api-lists"),
            True,
            False,
        ),
        ("(5-pure) as (5), pure Python (TUNLAB_PURE=1)", worker("batch"), True, False, {"env": pure}),
        ("(4t-pure) as (4t), pure Python (TUNLAB_PURE=1)", worker("threads"), True, False, {"env": pure}),
        (
            "(9) tunlab relay, plain, 1 queue, 2 streams",
            worker("threads"),
            False,
            False,
            {"streams": 2, "multi_queue": True},
        ),
        (
            "(9q) tunlab relay, plain, 2 queues, 2 streams",
            worker("mq2"),
            False,
            False,
            {"streams": 2, "multi_queue": True},
        ),
        (
            "(9o) tunlab relay, offload, 1 queue, 2 streams",
            worker("threads"),
            True,
            False,
            {"streams": 2, "multi_queue": True},
        ),
        (
            "(9oq) tunlab relay, offload, 2 queues, 2 streams",
            worker("mq2"),
            True,
            False,
            {"streams": 2, "multi_queue": True},
        ),
        ("(3o) pre-redesign relay, plain (process workers)", worker("old-processes"), False, False),
        ("(3to) pre-redesign relay, plain (thread workers)", worker("old-threads"), False, False),
        (
            "(4o) pre-redesign relay, super-packets passed through (process workers)",
            worker("old-processes"),
            True,
            False,
        ),
        (
            "(4to) pre-redesign relay, super-packets passed through (thread workers)",
            worker("old-threads"),
            True,
            False,
        ),
        (
            "(7) tunlab async relay (asyncio), super-packets passed through",
            worker("async"),
            True,
            False,
        ),
        (
            "(7u) tunlab async relay (uvloop), super-packets passed through",
            worker("uvloop"),
            True,
            False,
        ),
        ("(8) tunlab framed relay (asyncio, split + coalesce)", worker("framed"), True, False),
    ]
    try:
        import pytun  # noqa: F401

        pyt = lambda na, nb: [py, "-m", "benchmarks.relay_worker", "pytun", na, nb]  # noqa: E731
        runs.append(("(6) python-pytun relay, plain", pyt, False, True))
    except ImportError:
        print("python-pytun is not installed: variant (6) skipped", file=sys.stderr)
    only = [s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
    if only:  # e.g. BENCH_ONLY="(3),(3o)": just those variants (and the veth ceiling)
        runs = [r for r in runs if any(r[0].startswith(prefix + " ") for prefix in only)]
    samples: dict[str, list[Result]] = {}
    for round_ in range(repeat):
        samples.setdefault("veth", []).append(veth_ceiling(seconds))
        for run_ in runs:
            name, argv, offload, own = run_[:4]
            options: dict[str, object] = run_[4] if len(run_) > 4 else {}  # type: ignore[misc]
            print(f"  round {round_ + 1}/{repeat}: {name}", file=sys.stderr, flush=True)
            samples.setdefault(name, []).append(
                relay_run(name, argv, offload, seconds, own_devices=own, **options)  # type: ignore[arg-type]
            )
    return [_median(rs) for rs in samples.values()]


def _median(results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.gbps)
    mid = ordered[len(ordered) // 2]
    spread = f"{ordered[0].gbps:.2f}-{ordered[-1].gbps:.2f}" if len(ordered) > 1 else ""
    return Result(mid.name, mid.gbps, mid.retransmits, mid.relay_cpu, spread, mid.relay_usr)


def report(results: list[Result]) -> str:
    by = {r.name.split(")")[0] + ")": r for r in results}
    ratio_base = {
        "(3)": "(2a)",
        "(3t)": "(2a)",
        "(4)": "(2b)",
        "(4t)": "(2b)",
        "(7)": "(4t)",
        "(7u)": "(4t)",
        "(8)": "(7)",
        "(4i)": "(4)",
        "(4ti)": "(4t)",
        "(4d)": "(4w)",
        "(5)": "(4)",
        "(5p)": "(4)",
        "(5a)": "(4)",
        "(5b)": "(4)",
        "(5-pure)": "(4)",
        "(4t-pure)": "(2b)",
        "(9q)": "(9)",
        "(9oq)": "(9o)",
        "(3o)": "(2a)",
        "(3to)": "(2a)",
        "(4o)": "(2b)",
        "(4to)": "(2b)",
        "(6)": "(2a)",
        "(2a)": "(1)",
        "(2b)": "(1)",
    }
    lines = [
        "| variant | Gbit/s (median) | range | retransmits | relay CPU % (user) | ratio |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        key = r.name.split(")")[0] + ")"
        base = by.get(ratio_base.get(key, ""))
        ratio = f"{r.gbps / base.gbps:.2f}x of {ratio_base[key]}" if base and base.gbps else ""
        cpu = f"{r.relay_cpu:.0f} ({r.relay_usr:.0f})" if r.relay_cpu is not None else "-"
        lines.append(f"| {r.name} | {r.gbps:.2f} | {r.note} | {r.retransmits} | {cpu} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    if shutil.which("iperf3") is None:
        sys.exit("iperf3 is missing: apt-get install iperf3 (make bench installs it)")
    seconds = int(os.environ.get("BENCH_SECONDS", "10"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    print(report(run(seconds, repeat)))


if __name__ == "__main__":
    main()
