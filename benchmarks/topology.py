"""Lab bring-up benchmark: a 100-node chain (100 namespaces, 99 veth links, addresses, routes
end to end, a ping from end to end), tunlab against a shell script of `ip` commands doing the
same, interleaved in one run; also with a process started in every node (each node's cgroup
and private namespaces made, the processes ended by down). BENCH_TOPOLOGY_BASELINE=<git ref>
adds the same runs of tunlab at that commit (a temporary worktree), to measure a change."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.topology_once import address

CHAIN = Path(__file__).resolve().parents[1] / "examples" / "chain.yaml"


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
        up.append(f"ip -n {a} addr add {address(i, 1)}/24 dev right")
        up.append(f"ip -n {b} link set left up")
        up.append(f"ip -n {b} addr add {address(i, 2)}/24 dev left")
    for i in range(n):
        ns = f"{prefix}{i}"
        if i < n - 1:
            up.append(f"ip -n {ns} route add default via {address(i, 2)}")
        if i >= 2:
            up.append(f"ip -n {ns} route add 198.18.0.0/24 via {address(i - 1, 1)}")
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
            ["ip", "netns", "exec", f"{prefix}0", "ping", "-t", "255", "-c1", "-W3", address(n - 2, 2)],
            capture_output=True,
        )
        t0 = time.perf_counter()
        subprocess.run(["bash", str(down_path)], check=True)
        t_down = time.perf_counter() - t0
    return t_up, t_down, ping.returncode == 0


def run_in(src: Path | None, n: int, busy: bool) -> tuple[float, float, bool]:
    """One chain run in a fresh interpreter importing tunlab from src (None: the installed one,
    this checkout) with src's own examples/chain.yaml."""
    env = dict(os.environ)
    chain = CHAIN
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(src / "plugins"), env.get("PYTHONPATH", "")])
        chain = src / "examples" / "chain.yaml"
    once = Path(__file__).with_name("topology_once.py")
    out = subprocess.run(
        [sys.executable, str(once), str(chain), str(n), "1" if busy else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    t_up, t_down, ok = json.loads(out.strip().splitlines()[-1])
    return float(t_up), float(t_down), bool(ok)


@contextlib.contextmanager
def baseline_tree(ref: str | None) -> Iterator[Path | None]:
    """A worktree of this repository at ref (BENCH_TOPOLOGY_BASELINE), removed afterwards."""
    if not ref:
        yield None
        return
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="tunlab-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)


def _median(runs: list[tuple[float, float, bool]]) -> tuple[float, float, bool]:
    return (
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        all(r[2] for r in runs),
    )


def main() -> None:
    n = int(os.environ.get("BENCH_CHAIN_NODES", "100"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    ref = os.environ.get("BENCH_TOPOLOGY_BASELINE")
    with baseline_tree(ref) as old:
        variants: dict[str, Callable[[], tuple[float, float, bool]]] = {
            "shell": functools.partial(run_shell, n),
            "tunlab": functools.partial(run_in, None, n, False),
            "tunlab, a process in every node": functools.partial(run_in, None, n, True),
        }
        if old is not None:
            variants[f"tunlab at {ref}"] = functools.partial(run_in, old, n, False)
            variants[f"tunlab at {ref}, a process in every node"] = functools.partial(run_in, old, n, True)
        results: dict[str, list[tuple[float, float, bool]]] = {k: [] for k in variants}
        for r in range(repeat):
            for name, fn in variants.items():
                print(f"  round {r + 1}/{repeat}: {name}", file=sys.stderr, flush=True)
                results[name].append(fn())
                time.sleep(1)  # let the kernel finish namespace cleanup before the next run
    med = {k: _median(v) for k, v in results.items()}
    print(f"{n}-node chain ({n} namespaces, {n - 1} veth links, addresses, routes; median of {repeat})\n")
    print("| | up (s) | down (s) | up + down (s) | ping end to end |")
    print("|---|---:|---:|---:|---|")
    for k, (up, down, ok) in med.items():
        label = "shell script of `ip` commands" if k == "shell" else k
        print(f"| {label} | {up:.2f} | {down:.3f} | {up + down:.2f} | {'ok' if ok else 'FAILED'} |")
    total = {k: v[0] + v[1] for k, v in med.items()}
    print(
        f"\ntunlab is {med['shell'][0] / med['tunlab'][0]:.1f}x faster up and "
        f"{med['shell'][1] / med['tunlab'][1]:.1f}x faster down than the script."
    )
    if ref:
        for suffix in ("", ", a process in every node"):
            ratio = total[f"tunlab{suffix}"] / total[f"tunlab at {ref}{suffix}"]
            print(f"tunlab{suffix}: {ratio:.2f}x the up + down time of {ref}.")


if __name__ == "__main__":
    main()
