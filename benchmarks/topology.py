"""Lab bring-up benchmark: a 100-node chain (100 namespaces, 99 veth links, addresses, routes
end to end, a ping from end to end), tunlab against a shell script of `ip` commands doing the
same, interleaved in one run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunlab.topologies import Lab, load_file

CHAIN = Path(__file__).resolve().parents[1] / "examples" / "chain.yaml"


def _addr(link: int, end: int) -> str:
    return f"198.{18 + link // 256}.{link % 256}.{end}"


def shell_script(n: int, prefix: str) -> tuple[str, str]:
    """(up script, down script) doing what examples/chain.yaml describes, one `ip` per step."""
    up = ["set -e"]
    for i in range(n):
        ns = f"{prefix}{i}"
        up.append(f"ip netns add {ns}")
        up.append(f"ip -n {ns} link set lo up")
        for key, value in (
            ("net.ipv4.ip_forward", 1),
            ("net.ipv4.ip_default_ttl", 255),
            ("net.ipv6.conf.all.accept_dad", 0),
            ("net.ipv6.conf.default.accept_dad", 0),
        ):
            up.append(f"ip netns exec {ns} sysctl -qw {key}={value}")
    for i in range(n - 1):
        a, b = f"{prefix}{i}", f"{prefix}{i + 1}"
        up.append(f"ip -n {a} link add right type veth peer name left netns {b}")
        up.append(f"ip -n {a} link set right up")
        up.append(f"ip -n {a} addr add {_addr(i, 1)}/24 dev right")
        up.append(f"ip -n {b} link set left up")
        up.append(f"ip -n {b} addr add {_addr(i, 2)}/24 dev left")
    for i in range(n):
        ns = f"{prefix}{i}"
        if i < n - 1:
            up.append(f"ip -n {ns} route add default via {_addr(i, 2)}")
        if i >= 2:
            up.append(f"ip -n {ns} route add 198.18.0.0/24 via {_addr(i - 1, 1)}")
    down = [f"ip netns del {prefix}{i}" for i in range(n)]
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def run_shell(n: int) -> tuple[float, float, bool]:
    prefix = f"tlbench{os.getpid()}-"
    up, down = shell_script(n, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        up_path, down_path = Path(tmp, "up.sh"), Path(tmp, "down.sh")
        up_path.write_text(up)
        down_path.write_text(down)
        t0 = time.perf_counter()
        subprocess.run(["bash", str(up_path)], check=True)
        t_up = time.perf_counter() - t0
        ping = subprocess.run(
            ["ip", "netns", "exec", f"{prefix}0", "ping", "-t", "255", "-c1", "-W3", _addr(n - 2, 2)],
            capture_output=True,
        )
        t0 = time.perf_counter()
        subprocess.run(["bash", str(down_path)], check=True)
        t_down = time.perf_counter() - t0
    return t_up, t_down, ping.returncode == 0


def run_tunlab(n: int) -> tuple[float, float, bool]:
    t0 = time.perf_counter()
    lab = Lab(load_file(CHAIN, {"n": n}), unique=True)
    lab.up()
    t_up = time.perf_counter() - t0
    ok = lab.node("n0").run(["ping", "-t", "255", "-c1", "-W3", _addr(n - 2, 2)]).code == 0
    t0 = time.perf_counter()
    lab.down()
    t_down = time.perf_counter() - t0
    return t_up, t_down, ok


def main() -> None:
    n = int(os.environ.get("BENCH_CHAIN_NODES", "100"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    results: dict[str, list[tuple[float, float, bool]]] = {"tunlab": [], "shell": []}
    for r in range(repeat):
        for name, fn in (("shell", run_shell), ("tunlab", run_tunlab)):
            print(f"  round {r + 1}/{repeat}: {name}", file=sys.stderr, flush=True)
            results[name].append(fn(n))
            time.sleep(1)  # let the kernel finish namespace cleanup before the next run
    med = {
        k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
        for k, v in results.items()
    }
    pings = {k: all(x[2] for x in v) for k, v in results.items()}
    print(f"{n}-node chain ({n} namespaces, {n - 1} veth links, addresses, routes; median of {repeat})\n")
    print("| | up (s) | down (s) | ping end to end |")
    print("|---|---:|---:|---|")
    for k in ("shell", "tunlab"):
        print(
            f"| {'shell script of `ip` commands' if k == 'shell' else 'tunlab (Lab.up / Lab.down)'} "
            f"| {med[k][0]:.2f} | {med[k][1]:.3f} | {'ok' if pings[k] else 'FAILED'} |"
        )
    print(
        f"\ntunlab is {med['shell'][0] / med['tunlab'][0]:.1f}x faster up and "
        f"{med['shell'][1] / med['tunlab'][1]:.1f}x faster down."
    )


if __name__ == "__main__":
    main()
