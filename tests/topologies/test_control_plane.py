"""The holder's control socket serves requests concurrently (a client that stays connected or a
long exec never holds up an impair), and `tunlab down` of a lab a program holds tears it down
through the socket: the program is not signalled, its `finally:` runs, its later calls raise
LabStopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.support import unique_name
from tunlab.errors import LabStopped
from tunlab.topologies import Lab, load_text
from tunlab.topologies._control import request
from tunlab.topologies._state import LabState, owned_namespaces

pytestmark = pytest.mark.root

LAB = """
name: ctl
nodes: {a: {}, b: {}}
links:
  - endpoints:
      - {node: a, interface: e0, ipv4: 198.18.95.1/24}
      - {node: b, interface: e0, ipv4: 198.18.95.2/24}
    impair: {}
"""


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps tables at 80 columns without a terminal
    return subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_impair_answers_within_a_second_while_a_client_idles_and_an_exec_runs() -> None:
    with Lab(load_text(LAB, "yaml"), unique=True) as lab:
        assert lab._state is not None
        path = lab._state.path.with_suffix(".sock")
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(str(path))  # connected, sends nothing
        execs = [
            threading.Thread(target=request, args=(path, {"op": "exec", "node": "a", "argv": ["sleep", "4"]}))
            for _ in range(3)
        ]
        for t in execs:
            t.start()
        time.sleep(0.3)  # the execs are running
        start = time.monotonic()
        done = cli("impair", lab.name, "a:e0", "delay=5ms")
        took = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        assert "delay 5ms" in lab.link("a:e0").stats()["a_to_b"]
        # the CLI's own start-up is in `took`; the holder's answer is the part that matters
        answer_start = time.monotonic()
        answer = request(path, {"op": "links"}, timeout=2)
        assert answer["ok"] and time.monotonic() - answer_start < 1.0
        assert took < 10, f"impair took {took:.1f} s"
        idle.close()
        for t in execs:
            t.join()


def test_down_of_a_program_held_lab_lets_its_finally_run(tmp_path: Path) -> None:
    name = unique_name("ph")
    marker = tmp_path / "finally-ran"
    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from tunlab.errors import LabStopped
            from tunlab.topologies import Lab, load_text
            try:
                with Lab(load_text({LAB!r}, "yaml"), name={name!r}) as lab:
                    print("up", flush=True)
                    assert lab.wait_down(60), "nobody took it down"
                    try:
                        lab.node("a")
                    except LabStopped as exc:
                        print("stopped:", exc, flush=True)
            finally:
                open({str(marker)!r}, "w").write("yes")
            """
        )
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "up"
    done = cli("down", name)
    assert done.returncode == 0, done.stderr
    out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 0, f"the holder exited {holder.returncode} (143 would be SIGTERM)"
    assert marker.read_text() == "yes"
    assert "taken down by `tunlab down`" in out
    assert LabState.load(name) is None


def test_later_calls_on_a_lab_taken_down_from_outside_raise_lab_stopped() -> None:
    lab = Lab(load_text(LAB, "yaml"), unique=True).up()
    try:
        assert lab._state is not None
        answer = request(lab._state.path.with_suffix(".sock"), {"op": "down", "by": "a test"})
        assert answer == {"ok": True, "problems": []}
        assert lab.wait_down(0) and not lab.running
        with pytest.raises(LabStopped, match="taken down by a test"):
            lab.node("a")
        assert lab.down() == []
    finally:
        lab.down()


def test_tunlab_up_in_the_foreground_ends_when_tunlab_down_asks(tmp_path: Path) -> None:
    name = unique_name("fg")
    file = tmp_path / "lab.yaml"
    file.write_text(LAB)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", str(file), "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while LabState.load(name) is None or LabState.load(name).status != "up":  # type: ignore[union-attr]
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        assert cli("down", name).returncode == 0
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"lab {name} is down" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


TUN_PAIR = """
name: hp
nodes: {a: {}, b: {}}
links:
  - type: tun-pair
    endpoints:
      - {node: a, interface: t0, ipv4: 198.18.96.1/24}
      - {node: b, interface: t0, ipv4: 198.18.96.2/24}
"""


def wait_for(predicate: object, timeout: float = 5.0) -> float:
    """Seconds until predicate() is true; AssertionError past timeout."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "not within the timeout"
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_killed_relay_worker_degrades_the_lab_within_a_second_and_impair_names_it() -> None:
    with Lab(load_text(TUN_PAIR, "yaml"), unique=True) as lab:
        assert lab.health() == {}
        state = LabState.load(lab.name)
        assert state is not None and state.relay_pids
        victim = state.relay_pids[0]
        os.kill(victim, signal.SIGKILL)
        took = wait_for(lambda: LabState.load(lab.name).status == "degraded")  # type: ignore[union-attr]
        assert took < 1.0, f"the state said degraded after {took:.2f} s"
        state = LabState.load(lab.name)
        assert state is not None
        (part, cause), *_ = state.health.items()
        assert part == "link a:t0 <-> b:t0" and f"(pid {victim}) was killed by SIGKILL" in cause
        listed = cli("ls")
        assert "degraded: link a:t0 <-> b:t0 died" in listed.stdout, listed.stdout
        done = cli("impair", lab.name, "a:t0", "delay=5ms")
        assert done.returncode == 1, done
        assert "its relay died" in done.stderr and "SIGKILL" in done.stderr and "Traceback" not in done.stderr
        inspected = cli("inspect", lab.name)
        assert "degraded: link a:t0 <-> b:t0" in inspected.stderr


def test_a_namespace_deleted_from_outside_degrades_the_lab() -> None:
    with Lab(load_text(TUN_PAIR, "yaml"), unique=True) as lab:
        path = lab.node("b").netns.path
        subprocess.run(["umount", "-l", path], check=True)  # as `ip netns del` does
        os.unlink(path)
        wait_for(lambda: "node b" in lab.health())
        assert "deleted from outside the lab" in lab.health()["node b"]
        inspected = cli("inspect", lab.name)
        assert "is gone (deleted from outside the lab)" in inspected.stdout + inspected.stderr
        entered = cli("exec", lab.name, "b", "--", "true")
        assert entered.returncode == 1 and "deleted from outside the lab" in entered.stderr, entered


def test_exec_status_and_live_numbers_read_as_a_shell_and_validate_would() -> None:
    with Lab(load_text(LAB, "yaml"), unique=True) as lab:
        killed = cli("exec", lab.name, "a", "--", "sh", "-c", "kill -9 $$")
        assert killed.returncode == 137, killed  # 128 + SIGKILL, as a shell says
        assert cli("exec", lab.name, "a", "--", "sh", "-c", "exit 3").returncode == 3
        for setting, field in (
            ("delay=1e308ms", "delay"),
            ("rate=1e400mbit", "rate"),
            ("delay=2592000s", "delay"),
        ):
            done = cli("impair", lab.name, "a:e0", setting)
            assert done.returncode == 2, done
            assert field in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_hand_over_gives_the_running_lab_to_a_supervisor(needs_root) -> None:
    from tunlab.topologies._operations import node_of, stop_lab

    lab = Lab(load_text(TUN_PAIR, "yaml"), unique=True).up()
    lab.link("a:t0").impair(delay="5ms")
    try:
        pid = lab.hand_over()
    finally:
        if lab.running:  # not handed over: ours to take down
            lab.down()
    assert not lab.running
    state = LabState.load(lab.name)
    assert state is not None and state.owner_alive and state.owner_pid == pid
    try:
        _, node = node_of(lab.name, "a")
        assert node is not None
        done = node.run(["ping", "-c1", "-W2", "198.18.96.2"])  # through the relay the supervisor runs
        assert done.ok, done
        assert "delay 5ms" in cli("inspect", lab.name).stdout  # the impairment went across too
    finally:
        assert stop_lab(lab.name) == []
    assert not owned_namespaces(lab.id)
