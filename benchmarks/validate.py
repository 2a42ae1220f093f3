"""`validate` at scale: the chain lab (examples/chain.yaml) with 1,000 and 10,000 nodes, read
from its YAML template and from the same topology as JSON, each run in a fresh interpreter, to
show that reading and checking a topology grows linearly with it (it was quadratic: 10x the nodes
took 24x the time). BENCH_VALIDATE_BASELINE=<git ref> runs the same with tunlab at that commit
(a temporary worktree) side by side."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.topology import baseline_tree
from tunlab.topologies._limits import Limits
from tunlab.topologies._loader import load_file

CHAIN = Path(__file__).resolve().parents[1] / "examples" / "chain.yaml"
BIG = Limits(values=10**7, file_size=1 << 30, rendered_size=1 << 30)

# what one fresh interpreter runs: load_file once, its time printed
ONCE = """
import json, sys, time
from tunlab.topologies._limits import Limits
from tunlab.topologies._loader import load_file
big = Limits(values=10**7, file_size=1 << 30, rendered_size=1 << 30)
start = time.perf_counter()
load_file(sys.argv[1], json.loads(sys.argv[2]), limits=big)
print(time.perf_counter() - start)
"""


def timed(src: Path | None, path: Path, variables: dict[str, int], repeat: int) -> float:
    """Median seconds of load_file in `repeat` fresh interpreters (tunlab from src, or this tree)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", ONCE, str(path), json.dumps(variables)],
            env=env, capture_output=True, text=True, check=True, cwd=src or None,
        )  # fmt: skip
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def main() -> None:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    ref = os.environ.get("BENCH_VALIDATE_BASELINE")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, baseline_tree(ref) as base:
        for n in (1_000, 10_000):
            topo = load_file(CHAIN, {"n": n}, limits=BIG)
            as_json = Path(tmp) / f"chain{n}.json"
            as_json.write_text(json.dumps(topo.model_dump(mode="json", exclude_unset=True, by_alias=True)))
            row = [n, timed(None, CHAIN, {"n": n}, repeat), timed(None, as_json, {}, repeat)]
            if base is not None:
                row += [timed(base, CHAIN, {"n": n}, repeat), timed(base, as_json, {}, repeat)]
            rows.append(row)
    print(f"validate (load_file: render, parse, model, every check; median of {repeat} fresh interpreters)\n")
    if ref:
        print(
            f"| nodes | YAML template (s) | JSON (s) | YAML at {ref} (s) | JSON at {ref} (s) | ratio YAML | ratio JSON |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n, y, j, by, bj in rows:
            print(f"| {n:,} | {y:.2f} | {j:.2f} | {by:.2f} | {bj:.2f} | {by / y:.1f}x | {bj / j:.1f}x |")
    else:
        print("| nodes | YAML template (s) | JSON (s) |")
        print("|---:|---:|---:|")
        for n, y, j, *_ in rows:
            print(f"| {n:,} | {y:.2f} | {j:.2f} |")
    (n1, y1, j1, *_), (n2, y2, j2, *_) = rows
    print(f"\n{n2 // n1}x the nodes: {y2 / y1:.1f}x the time from YAML, {j2 / j1:.1f}x from JSON.")


if __name__ == "__main__":
    main()
