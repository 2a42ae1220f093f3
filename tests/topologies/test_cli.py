"""Every CLI verb, its exit codes (0 ok, 1 runtime failure, 2 bad input) and messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import require_tool
from tunlab.topologies._state import LabState, all_labs, owned_namespaces

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = str(EXAMPLES / "demo.yaml")


def tunlab(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_ok_and_bad(tmp_path) -> None:
    ok = tunlab("validate", DEMO)
    assert ok.returncode == 0
    assert "ok — lab 'demo', 3 nodes, 2 links" in ok.stdout
    bad = write(tmp_path, "bad.yaml", "name: b\nnodes: {h1: {}}\nlinks:\n  - endpoints: ['h1:e0', 'h9:e0']\n")
    done = tunlab("validate", bad)
    assert done.returncode == 2
    assert "bad.yaml:4: links[0].endpoints[1]: node 'h9' is not defined" in done.stderr
    no_traceback(done)


def test_vars_on_the_command_line() -> None:
    done = tunlab("validate", str(EXAMPLES / "chain.yaml"), "--var", "n=7")
    assert "7 nodes, 6 links" in done.stdout
    done = tunlab("validate", DEMO, "--var", "not a var")
    assert done.returncode == 2
    assert "write it as NAME=VALUE" in done.stderr
    no_traceback(done)


def test_schema_is_json() -> None:
    done = tunlab("schema", check=True)
    schema = json.loads(done.stdout)
    assert schema["title"] == "Topology"
    assert "nodes" in schema["properties"]


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg", "png"])
def test_graph(tmp_path, fmt: str) -> None:
    if fmt in ("svg", "png"):
        require_tool("dot")
    out = tmp_path / f"demo.{fmt}"
    tunlab("graph", DEMO, "--format", fmt, "-o", str(out), check=True)
    data = out.read_bytes()
    if fmt == "mermaid":
        assert data.startswith(b"graph LR") and b"tun-pair" in data and b"198.18.2.2/24" in data
    elif fmt == "dot":
        assert data.startswith(b"graph") and b"r1" in data
    elif fmt == "svg":
        assert b"<svg" in data
        assert b"tun-pair" in data or b"tun&#45;pair" in data
    else:
        assert data.startswith(b"\x89PNG")


def test_bad_input_exit_codes(tmp_path) -> None:
    for args, words in (
        (("validate", str(tmp_path / "missing.yaml")), "no such file"),
        (("graph", DEMO, "--format", "gif"), "Invalid value"),
        (("up",), "Missing argument"),
        (("nonsense",), "No such command"),
    ):
        done = tunlab(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr
        no_traceback(done)


@pytest.mark.root
def test_detached_lab_ls_inspect_exec_down(needs_root) -> None:
    name = f"clidemo{os.getpid()}"
    up = tunlab("up", DEMO, "-d", "--name", name)
    assert up.returncode == 0, up.stderr
    assert "impaired" not in up.stdout  # the demo's tun-pair carries no impairment
    try:
        state = LabState.load(name)
        assert state is not None and state.owner_alive and state.detached
        listed = tunlab("ls", check=True)
        assert name in listed.stdout
        human = tunlab("inspect", name, check=True)
        assert "198.18.2.2/24" in human.stdout
        data = json.loads(tunlab("inspect", name, "--json", check=True).stdout)
        assert set(data["nodes"]) == {"h1", "r1", "h2"}
        ping = tunlab("exec", name, "h1", "--", "ping", "-c", "1", "-W", "2", "198.18.2.2")
        assert ping.returncode == 0, ping.stderr
        assert tunlab("exec", name, "h1", "--", "false").returncode == 1  # the command's own code
        nothing = tunlab("exec", name, "h1", "--", "no-such-command")
        assert nothing.returncode == 127 and "command not found" in nothing.stderr, nothing  # as a shell
        missing = tunlab("exec", name, "h9", "--", "true")
        assert missing.returncode == 2 and "has no node 'h9'" in missing.stderr
        again = tunlab("up", DEMO, "-d", "--name", name)
        assert again.returncode == 1 and "already running" in again.stderr
        no_traceback(again)
    finally:
        down = tunlab("down", name)
    assert down.returncode == 0, down.stderr
    assert LabState.load(name) is None
    assert not owned_namespaces(state.id)
    assert tunlab("down", name).returncode == 1


@pytest.mark.root
def test_impair_a_detached_lab_live(needs_root, tmp_path) -> None:
    name = f"cliimp{os.getpid()}"
    assert tunlab("up", DEMO, "-d", "--name", name).returncode == 0
    try:
        done = tunlab("impair", name, "h2:tun0", "delay=40ms", "loss=0%")
        assert done.returncode == 0, done.stderr
        assert "delay 40ms" in done.stdout and "in the tun-pair's relay" in done.stdout
        ping = tunlab("exec", name, "h1", "--", "ping", "-c", "3", "-i", "0.05", "198.18.2.2")
        rtts = [float(x.split("time=")[1].split()[0]) for x in ping.stdout.splitlines() if "time=" in x]
        assert rtts and all(75 < r < 90 for r in rtts[1:]), ping.stdout
        spec = write(tmp_path, "imp.yaml", "a_to_b: {rate: 10mbit}\nb_to_a: {delay: 1ms}\n")
        assert tunlab("impair", name, "1", "--file", spec).returncode == 0
        data = json.loads(tunlab("inspect", name, "--json", check=True).stdout)
        link = next(x for x in data["impairments"] if x["link"] == 1)
        assert link["a_to_b"] == "netem limit 1000 rate 10mbit" and link["via"] == "relay"
        assert "sent" in link["a_to_b_stats"]
        # bad input: exit 2, the message names the problem, nothing changes
        for argv, words in (
            (["h2:tun0", "delay=40"], "has no unit"),
            (["h9:x", "delay=4ms"], "no link 'h9:x'"),
            (["h2:tun0"], "give settings"),
            (["h2:tun0", "delay"], "write key=value"),
            (["h2:tun0", "--clear", "delay=1ms"], "--clear takes no settings"),
            (["h1:eth0", "delay=5ms"], "declare `impair: {}`"),
        ):
            bad = tunlab("impair", name, *argv)
            if "impair: {}" in words and "sch_netem" not in bad.stderr and bad.returncode == 0:
                continue  # this kernel has netem: the veth was impaired by the kernel
            assert bad.returncode == 2 and words in bad.stderr, (argv, bad.stderr)
            no_traceback(bad)
        still = json.loads(tunlab("inspect", name, "--json", check=True).stdout)
        assert next(x for x in still["impairments"] if x["link"] == 1)["a_to_b"] == link["a_to_b"]
        assert tunlab("impair", name, "1", "--clear").returncode == 0
    finally:
        tunlab("down", name)
    assert tunlab("impair", name, "1", "delay=1ms").returncode == 1  # no such lab any more


@pytest.mark.root
def test_foreground_up_stops_on_sigterm(needs_root) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", DEMO, "--name", f"fg{os.getpid()}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = _wait_for_lab(f"fg{os.getpid()}", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "is down" in out
    assert not owned_namespaces(state.id)
    assert LabState.load(state.name) is None


def _wait_for_lab(name: str, proc: subprocess.Popen[str]) -> LabState:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = LabState.load(name)
        if state is not None and state.status == "up":
            return state
        if proc.poll() is not None:
            raise AssertionError(f"tunlab up exited: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError("the lab did not come up")


@pytest.mark.root
def test_gc_after_sigkill_of_the_holder(needs_root) -> None:
    name = f"killed{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", DEMO, "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = _wait_for_lab(name, proc)
    assert owned_namespaces(state.id)
    proc.kill()
    proc.wait()
    time.sleep(0.2)
    for pid in state.relay_pids:  # relay workers die with their holder (PR_SET_PDEATHSIG)
        assert (
            not os.path.exists(f"/proc/{pid}")
            or b"tunlab/relay/_worker.py" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    listed = tunlab("ls", check=True)
    assert "DEAD" in listed.stdout
    gc = tunlab("gc", check=True)
    assert f"lab {name}" in gc.stdout
    assert not owned_namespaces(state.id)
    assert name not in {s.name for s in all_labs()}
    assert "nothing to clean" in tunlab("gc", check=True).stdout


@pytest.mark.root
def test_deploy_failure_rolls_back_and_explains(needs_root) -> None:
    env = {**os.environ, "TUNLAB_FAIL_AT": "relay r1:tun0"}
    done = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", "up", DEMO, "-d", "--name", f"fail{os.getpid()}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "deploy failed at step 'relay r1:tun0 <-> h2:tun0'" in done.stderr
    assert "injected failure" in done.stderr
    no_traceback(done)
    assert f"fail{os.getpid()}" not in {s.name for s in all_labs()}
    live = {s.id for s in all_labs() if s.owner_alive}
    assert all(n[3:9] in live for n in owned_namespaces()), "a failed deploy left namespaces"


def test_detached_and_foreground_up_report_a_failure_alike(needs_root, tmp_path) -> None:
    """The same words, the rollback line and the exit code, whichever process deployed."""
    env = {**os.environ, "TUNLAB_FAIL_AT": "routes of"}
    bad_template = write(tmp_path, "t.yaml", "name: t\nnodes:\n  h1: {}\n  h2: {{ 1 / 0 }}\n")
    for argv, code in (([DEMO], 1), ([bad_template], 2)):
        seen = []
        for detach in ([], ["-d"]):
            done = subprocess.run(
                [sys.executable, "-m", "tunlab._cli.main", "up", *argv, *detach, "--name", f"alike{os.getpid()}"],
                capture_output=True, text=True, timeout=60, env=env,
            )  # fmt: skip
            assert done.returncode == code, done
            no_traceback(done)
            seen.append(done.stderr.strip())
        assert seen[0] == seen[1], seen
        if code == 1:
            assert seen[0].endswith("everything made before that step was removed"), seen


def test_commands_that_need_root_say_so(monkeypatch, capsys) -> None:
    from tunlab._cli.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for args in (["up", DEMO], ["down", "x"], ["gc"], ["exec", "a", "b", "--", "true"], ["demo"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 1
        assert "needs root" in capsys.readouterr().err


def test_detached_up_reports_each_step_as_it_goes(needs_root) -> None:
    from tunlab.topologies._operations import stop_lab, up_detached

    heard: list[tuple[str, int, int]] = []
    name = f"steps{os.getpid()}"
    up_detached(DEMO, name, progress=lambda step, i, n: heard.append((step, i, n)))
    try:
        steps = [step for step, _, _ in heard]
        assert "create netns node h1" in steps, steps
        assert "routes of h1" in steps and steps[-1] == "done"
        assert [i for _, i, _ in heard] == sorted(i for _, i, _ in heard)  # in order, as they ran
    finally:
        assert stop_lab(name) == []


@pytest.mark.root
def test_capture_a_node_interface_into_a_pcap(needs_root, tmp_path) -> None:
    from tunlab.testing._packets import parse_ip

    name = f"clicap{os.getpid()}"
    assert tunlab("up", DEMO, "-d", "--name", name).returncode == 0
    try:
        pcap = tmp_path / "h1.pcap"
        cap = subprocess.Popen(
            [sys.executable, "-m", "tunlab._cli.main", "capture", name, "h1", "eth0", "-o", str(pcap),
             "--count", "10", "--seconds", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # the capture socket is open
        tunlab("exec", name, "h1", "--", "ping", "-c", "8", "-i", "0.1", "198.18.2.2", check=True)
        out, err = cap.communicate(timeout=60)
        assert cap.returncode == 0, err
        assert "10 packet(s)" in out and str(pcap) in out  # --count: the first ten
        data = pcap.read_bytes()
        assert data[:4] == bytes.fromhex("d4c3b2a1")  # a pcap file, little-endian
        frames, at = [], 24
        while at < len(data):
            size = int.from_bytes(data[at + 8 : at + 12], "little")
            frames.append(data[at + 16 : at + 16 + size])
            at += 16 + size
        assert len(frames) == 10
        ip = [parse_ip(f[14:]) for f in frames if f[12:14] == b"\x08\x00"]  # IPv4 behind Ethernet
        assert ip and all(p.proto == 1 for p in ip)  # the pings (ARP and IPv6 around them)
        bad = tunlab("capture", name, "h1", "nope0", "-o", str(tmp_path / "x.pcap"), "--seconds", "1")
        assert bad.returncode != 0 and "nope0" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        tunlab("down", name)
