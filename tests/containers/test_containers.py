"""Container nodes: a mixed lab, TUN devices inside containers, rollback, gc after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tunlab import traffic
from tunlab.errors import DeployError, TopologyError
from tunlab.testing import assert_delivered_exactly, assert_gso_seen, assert_reachable
from tunlab.topologies import Lab, load_file, load_text
from tunlab.topologies._containers import LABEL_ID
from tunlab.topologies._state import LabState, all_labs, owned_namespaces

pytestmark = pytest.mark.root
MIXED = Path(__file__).resolve().parents[2] / "examples" / "mixed.yaml"


def lab_containers(client, lab_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_ID}={lab_id}"})


def test_mixed_lab(docker_engine, capture) -> None:
    lab = Lab(load_file(MIXED), unique=True)
    with lab:
        h1, c1, c2 = lab.node("h1"), lab.node("c1"), lab.node("c2")
        assert c2.kind == "container"
        assert len(lab_containers(docker_engine, lab.id)) == 2
        # reachability across a veth into a container and a tun-pair between containers
        assert_reachable(h1, "198.18.40.2")
        assert_reachable(h1, "198.18.41.2")
        # byte-exact TCP from a namespace node into a container, super-packets on the tun-pair
        with capture(lab, "c1", "tp0") as cap:
            result = traffic.tcp_stream(h1, c2, "198.18.41.2", nbytes=6 << 20)
        assert_delivered_exactly(result)
        assert_gso_seen(cap, gso_type="tcpv4", min_count=5, outgoing=True)
        # a TUN device tunlab made inside the container; the lab holds its fd
        dev = lab.device("c1", "tun0")
        assert dev.tcp_gso
        assert "198.18.43.1/24" in c1.run(["ip", "-br", "addr", "show", "tun0"]).text
        # software inside c2 may make its own TUN (/dev/net/tun + NET_ADMIN were passed)
        made = c2.run(["ip", "tuntap", "add", "dev", "tun9", "mode", "tun"])
        assert made.code == 0, made.stderr
        # exec sees the container's environment and filesystem
        assert c2.run(["sh", "-c", "echo $ROLE"]).text.strip() == "server"
        assert c2.run(["cat", "/etc/debian_version"]).code == 0
        # and the node's own view of its addresses, through docker exec
        assert "198.18.41.2/24" in c2.run(["ip", "-br", "addr"]).text
        info = lab.inspect()
        assert info["nodes"]["c2"]["kind"] == "container"
    assert not lab_containers(docker_engine, lab.id)
    assert not owned_namespaces(lab.id)


def test_container_without_tun_device_cannot_make_one(docker_engine) -> None:
    topo = load_text("name: nt\nnodes:\n  c1: {kind: container, image: tunlab/base}\n", "yaml")
    with Lab(topo, unique=True) as lab:
        out = lab.node("c1").run(["ip", "tuntap", "add", "dev", "tun9", "mode", "tun"])
        assert out.code != 0  # no /dev/net/tun and no NET_ADMIN unless the node asks


def test_missing_image_rolls_back(docker_engine) -> None:
    topo = load_text(
        textwrap.dedent(
            """
            name: noimage
            nodes:
              h1: {interfaces: {eth0: {ipv4: [198.18.44.1/24]}}}
              c1: {kind: container, image: tunlab/base}
              c2: {kind: container, image: "tunlab/does-not-exist:1"}
            links:
              - endpoints: ["h1:eth0", "c1:eth0"]
            """
        ),
        "yaml",
    )
    lab = Lab(topo, unique=True)
    with pytest.raises(DeployError) as info:
        lab.up()
    assert info.value.step == "create container nodes c1, c2"
    assert "image 'tunlab/does-not-exist:1' is not available locally" in str(info.value)
    assert not lab_containers(docker_engine, lab.id)
    assert not owned_namespaces(lab.id)
    assert lab.name not in {s.name for s in all_labs()}


def test_container_that_fails_to_start_rolls_back(docker_engine) -> None:
    topo = load_text(
        "name: bad\nnodes:\n  c1: {kind: container, image: tunlab/base}\n"
        "  c2: {kind: container, image: tunlab/base, command: [/no/such/program]}\n",
        "yaml",
    )
    lab = Lab(topo, unique=True)
    with pytest.raises(DeployError, match="container 'c2'"):
        lab.up()
    assert not lab_containers(docker_engine, lab.id)


def test_healthcheck_waits_for_a_file_and_times_out(docker_engine) -> None:
    ready = load_text(
        textwrap.dedent(
            """
            name: hc
            nodes:
              c1:
                kind: container
                image: tunlab/base
                command: [sh, -c, "sleep 1; touch /tmp/ready; sleep infinity"]
                healthcheck: {file: /tmp/ready, timeout: 20}
            """
        ),
        "yaml",
    )
    start = time.monotonic()
    with Lab(ready, unique=True) as lab:
        assert time.monotonic() - start >= 1.0
        assert lab.node("c1").run(["test", "-e", "/tmp/ready"]).code == 0
    never = load_text(
        "name: hc2\nnodes:\n  c1:\n    kind: container\n    image: tunlab/base\n"
        "    healthcheck: {command: [test, -e, /tmp/never], timeout: 1}\n",
        "yaml",
    )
    lab = Lab(never, unique=True)
    with pytest.raises(DeployError, match="not ready after 1 s"):
        lab.up()
    assert not lab_containers(docker_engine, lab.id)


def test_container_fields_are_validated() -> None:
    with pytest.raises(TopologyError, match="a container node needs an image"):
        load_text("name: x\nnodes:\n  c1: {kind: container}\n", "yaml")
    with pytest.raises(TopologyError, match="'cap_add' is for kind: container"):
        load_text("name: x\nnodes:\n  h1: {cap_add: [NET_ADMIN]}\n", "yaml")


def test_gc_removes_containers_after_sigkill(docker_engine) -> None:
    name = f"ckill{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", str(MIXED), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        state = LabState.load(name)
        if state is not None and state.status == "up":
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    assert state is not None and state.status == "up"
    assert len(lab_containers(docker_engine, state.id)) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", "gc"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"lab {name}" in done.stdout
    assert not lab_containers(docker_engine, state.id)
    assert not owned_namespaces(state.id)


def test_cli_exec_in_a_container(docker_engine) -> None:
    name = f"cexec{os.getpid()}"
    up = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", "up", "-d", str(MIXED), "--name", name],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, up.stderr
    try:
        out = subprocess.run(
            [sys.executable, "-m", "tunlab._cli.main", "exec", name, "c2", "--", "cat", "/etc/hostname"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.strip() == "c2"
    finally:
        subprocess.run(
            [sys.executable, "-m", "tunlab._cli.main", "down", name], capture_output=True, timeout=120
        )
    assert LabState.load(name) is None


def test_image_build_is_cached(docker_engine) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunlab._cli.main", "image", "build"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "already built" in done.stdout
