"""Ownership and liveness: gc removes only what a dead lab's record lists — whichever run
directory started it — and everything such a lab left, after SIGKILL at any step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import unique_name
from tunlab.topologies._state import LabState, owned_namespaces, owners_dir

pytestmark = pytest.mark.root
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = str(EXAMPLES / "demo.yaml")


def tunlab(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def holder(name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`tunlab up DEMO --name NAME` in the foreground (this test is the holder's parent)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", DEMO, "--name", name, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_up(name: str, proc: subprocess.Popen[str], run_dir: str | None = None) -> LabState:
    path = Path(run_dir or os.environ["TUNLAB_RUN_DIR"]) / "labs" / f"{name}.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = LabState.from_data(json.loads(path.read_text()))
            if state.status == "up":
                return state
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError(f"lab {name} did not come up")


def left_behind(state: LabState) -> list[str]:
    """Everything of that lab still on the machine."""
    out = [f"namespace {n}" for n in owned_namespaces(state.id)]
    out += [
        f"file {p}" for p in (state.record_path, owners_dir() / f"{state.id}.lock", state.path) if p.exists()
    ]
    for pid in state.relay_pids:
        try:
            if b"tunlab/relay/_worker.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(f"relay worker {pid}")
        except OSError:
            pass
    return out


def test_gc_leaves_live_labs_of_other_run_directories_alone(tmp_path: Path) -> None:
    dirs = [str(tmp_path / "run-a"), str(tmp_path / "run-b")]
    procs, states = [], []
    try:
        for i, d in enumerate(dirs):
            name = f"live{i}{os.getpid()}"
            procs.append(holder(name, env={"TUNLAB_RUN_DIR": d}))
            states.append(wait_up(name, procs[-1], d))
        for d in [*dirs, str(tmp_path / "run-c")]:
            done = tunlab("gc", env={"TUNLAB_RUN_DIR": d})
            assert done.returncode == 0, done.stderr
            for state in states:
                assert f"lab {state.name}" not in done.stdout
                assert owned_namespaces(state.id), f"gc in {d} removed live lab {state.name}"
        listed = tunlab("ls", env={"TUNLAB_RUN_DIR": dirs[0]})
        assert states[0].name in listed.stdout and "DEAD" not in listed.stdout
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    for state in states:
        assert not left_behind(state)


def test_a_zombie_holder_is_dead() -> None:
    name = f"zombie{os.getpid()}"
    proc = holder(name)
    state = wait_up(name, proc)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1].startswith("Z"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        assert "DEAD" in tunlab("ls").stdout  # not reaped: still a zombie, and dead
        start = time.monotonic()
        down = tunlab("down", name)
        assert down.returncode == 0, down.stderr
        assert time.monotonic() - start < 15  # no 30 s wait for a zombie
        assert not left_behind(state)
    finally:
        proc.wait()


def test_gc_removes_an_empty_mount_point_file_a_crash_left() -> None:
    """A holder killed between creating /run/netns/NAME and bind-mounting it leaves a plain file."""
    code = (
        "import os, sys\n"
        "from tunlab.topologies._state import LabState, claim, ns_name\n"
        "lab_id = sys.argv[1]\n"
        "claim(lab_id)\n"
        "s = LabState(name='crash' + lab_id, id=lab_id, owner_pid=os.getpid(), owner_start=None, topology={})\n"
        "s.nodes = {'h1': {'kind': 'netns', 'netns': ns_name(lab_id, 'h1')}}\n"
        "s.save()\n"
        "open('/run/netns/' + ns_name(lab_id, 'h1'), 'x').close()\n"
        "os._exit(0)\n"
    )
    lab_id = os.urandom(3).hex()
    subprocess.run([sys.executable, "-c", code, lab_id], check=True, timeout=60)
    leftover = Path(f"/run/netns/tl-{lab_id}-h1")
    assert leftover.exists() and leftover.stat().st_size == 0
    done = tunlab("gc")
    assert done.returncode == 0, done.stderr
    assert f"crash{lab_id}" in done.stdout
    assert not leftover.exists()
    assert not (owners_dir() / f"{lab_id}.json").exists()


def test_sigterm_during_a_long_bring_up_stops_it_and_rolls_back(tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(
        "name: slow\nnodes:\n  h1:\n    exec: [[sleep, '30']]\n  h2: {}\n"
        "links:\n  - endpoints: ['h1:e0', 'h2:e0']\n"
    )
    name = f"slow{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", str(slow), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = Path(os.environ["TUNLAB_RUN_DIR"]) / "labs" / f"{name}.json"
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    state = LabState.from_data(json.loads(path.read_text()))
    time.sleep(1.0)  # now in the exec step (sleep 30)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - start < 5, "SIGTERM did not stop the bring-up promptly"
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not left_behind(state)


def test_sigterm_while_a_template_renders(tmp_path: Path) -> None:
    slow = tmp_path / "loop.yaml"
    slow.write_text(
        "name: loop\nnodes: {h1: {}}\n# {% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", str(slow), "--limit", "render-seconds=60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - start < 5
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_unreadable_state_files_are_reported_and_removed() -> None:
    labs = Path(os.environ["TUNLAB_RUN_DIR"]) / "labs"
    labs.mkdir(parents=True, exist_ok=True)
    broken = labs / f"broken{os.getpid()}.json"
    broken.write_text('{"name": "broken", "id": "abc')  # truncated
    listed = tunlab("ls")
    assert listed.returncode == 0 and "CORRUPT" in listed.stdout, listed.stdout
    done = tunlab("gc")
    assert f"unreadable state file {broken}" in done.stdout
    assert not broken.exists()


def test_inspect_and_exec_on_a_dead_lab_say_so() -> None:
    name = f"dead{os.getpid()}"
    proc = holder(name)
    state = wait_up(name, proc)
    proc.kill()
    proc.wait()
    try:
        inspected = tunlab("inspect", name)
        assert inspected.returncode == 1 and "its holder" in inspected.stderr and "died" in inspected.stderr
        entered = tunlab("exec", name, "h1", "--", "true")
        assert entered.returncode == 1 and "tunlab gc" in entered.stderr
        assert "command not found" not in entered.stderr
    finally:
        tunlab("gc")
    assert not left_behind(state)


def _demo_steps() -> list[str]:
    from tunlab.topologies import Lab, load_file

    names: list[str] = []
    with Lab(load_file(DEMO), unique=True, progress=lambda step, i, n: names.append(step)):
        pass
    return [n for n in names if n != "done"]


def test_sigkill_at_every_step_then_gc_leaves_nothing() -> None:
    steps = _demo_steps()
    assert len(steps) > 8
    for i, step in enumerate(steps):
        name = f"k{i}-{unique_name('x')[-6:]}"
        done = subprocess.run(
            [sys.executable, "-m", "tunlab._cli.main", "up", DEMO, "--name", name],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TUNLAB_KILL_AT": step},
        )
        assert done.returncode == -signal.SIGKILL, f"{step}: {done.stderr}"
        path = Path(os.environ["TUNLAB_RUN_DIR"]) / "labs" / f"{name}.json"
        state = LabState.from_data(json.loads(path.read_text()))
        gc = tunlab("gc")
        assert gc.returncode == 0, gc.stderr
        assert f"lab {name}" in gc.stdout, (step, gc.stdout)
        assert not left_behind(state), f"after SIGKILL before {step!r}: {left_behind(state)}"
