"""Labs against the real kernel: every link type, rollback at every step, parallel labs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.support import fd_count, require_tool
from tunlab import SyncDevice
from tunlab import packets as pk
from tunlab.errors import DeployError, LabError
from tunlab.topologies import Lab, load_file, load_text
from tunlab.topologies import _engine as engine
from tunlab.topologies._state import all_labs, owned_namespaces

pytestmark = pytest.mark.root
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FULL = """
name: full
defaults:
  sysctls: {net.ipv4.ip_forward: 1}
nodes:
  h1:
    interfaces:
      eth0: {ipv4: [198.18.20.1/24], ipv6: ["2001:db8:20::1/64"]}
      tap0: {type: tap, mac: "02:00:5e:00:53:20", ipv4: [198.18.29.1/24]}
      tun0: {type: tun, offload: true, ipv4: [198.18.28.1/24]}
    routes:
      - {dst: 198.18.21.0/24, via: 198.18.20.2}
  r1:
    env: {ROLE: router}
    interfaces:
      eth0: {ipv4: [198.18.20.2/24], ipv6: ["2001:db8:20::2/64"], offload: {gro: on, tso: off}}
      eth1: {ipv4: [198.18.21.1/24]}
    exec:
      - [sh, -c, "test \\"$ROLE\\" = router"]
  h2:
    interfaces: {eth1: {ipv4: [198.18.21.2/24]}}
    routes: [{dst: 198.18.20.0/24, via: 198.18.21.1}]
  h3:
    interfaces: {eth1: {ipv4: [198.18.21.3/24]}}
links:
  - endpoints: ["h1:eth0", "r1:eth0"]
  - type: bridge
    name: lan
    endpoints: ["r1:eth1", "h2:eth1", "h3:eth1"]
  - type: vxlan
    vni: 7
    endpoints:
      - {node: h2, interface: vx0, underlay: eth1, ipv4: [198.18.23.2/24]}
      - {node: h3, interface: vx0, underlay: eth1, ipv4: [198.18.23.3/24]}
  - type: tun-pair
    endpoints:
      - {node: h1, interface: tp0, ipv4: [198.18.22.1/24], ipv6: ["2001:db8:22::1/64"]}
      - {node: h2, interface: tp0, ipv4: [198.18.22.2/24], ipv6: ["2001:db8:22::2/64"]}
"""


def full_topology():
    return load_text(textwrap.dedent(FULL), "yaml", "full.yaml")


def relay_worker_count() -> int:
    """Relay worker processes of this process (others may be dying elsewhere: not ours)."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if b"relay_worker" in cmd and ppid == os.getpid():
                count += 1
    return count


def ping(node, address: str) -> bool:
    return node.run(["ping", "-c", "1", "-W", "2", address]).code == 0


def test_every_link_type_carries_traffic(needs_root) -> None:
    require_tool("ping")
    with Lab(full_topology(), unique=True) as lab:
        h1, h2, h3, r1 = (lab.node(n) for n in ("h1", "h2", "h3", "r1"))
        assert ping(h1, "198.18.20.2")  # veth
        assert ping(h1, "2001:db8:20::2")
        assert ping(r1, "198.18.21.3")  # bridge
        assert ping(h1, "198.18.21.2")  # routed through r1 and the bridge
        assert ping(h2, "198.18.23.3")  # vxlan over the bridge
        assert ping(h1, "198.18.22.2")  # tun-pair relayed by tunlab
        assert ping(h1, "2001:db8:22::2")
        # the tap device is held by the lab: answer the kernel's ARP for a peer behind it
        tap = lab.device("h1", "tap0")
        assert isinstance(tap, SyncDevice)
        assert tap.mac_address == "02:00:5e:00:53:20"
        assert lab.device("h1", "tun0").tcp_gso
        with pytest.raises(LabError, match="not a tun/tap interface"):
            lab.device("h1", "eth0")
        info = lab.inspect()
        r1_eth0 = next(i for i in info["nodes"]["r1"]["interfaces"] if i["name"] == "eth0")
        assert r1_eth0["offload_original"]["tso"] is True  # veth default, before we switched it off
        assert "198.18.20.2/24" in r1_eth0["addresses"]
        assert {tuple(link["endpoints"]) for link in info["links"]} >= {("h1:eth0", "r1:eth0")}
        assert lab.relay_stats()
        assert len(lab.graph("dot")) > 100
        # ethtool agrees about the switched features
        out = r1.run(["ethtool", "-k", "eth0"]).text
        assert "tcp-segmentation-offload: off" in out
        assert "generic-receive-offload: on" in out
        assert lab.name in {s.name for s in all_labs()}
    assert not owned_namespaces(lab.id)
    assert lab.name not in {s.name for s in all_labs()}


def test_rollback_at_every_step(needs_root, monkeypatch) -> None:
    """Inject a failure at each step in turn: the error names it and nothing is left."""
    topo = full_topology()
    names: list[str] = []
    with Lab(topo, unique=True, progress=lambda step, i, n: names.append(step)):
        pass
    steps = [n for n in names if n != "done"]
    assert len(steps) > 20
    workers, fds = relay_worker_count(), fd_count()
    for step in steps:

        def fail(name: str, target: str = step) -> None:
            if name == target:
                raise LabError("injected")

        monkeypatch.setattr(engine, "FAILURE_HOOK", fail)
        lab = Lab(topo, unique=True)
        with pytest.raises(DeployError) as info:
            lab.up()
        assert info.value.step == step
        assert not owned_namespaces(lab.id), f"namespaces left after a failure at {step!r}"
        assert lab.name not in {s.name for s in all_labs()}, f"state left after {step!r}"
        assert relay_worker_count() == workers, f"relay workers left after {step!r}"
        assert fd_count() == fds, f"fds leaked after {step!r}"
        assert not lab.running


def test_two_labs_from_one_file_at_once(needs_root) -> None:
    topo = load_file(EXAMPLES / "demo.yaml")
    with Lab(topo, unique=True) as a, Lab(topo, unique=True) as b:
        assert a.id != b.id and a.name != b.name
        assert ping(a.node("h1"), "198.18.2.2")
        assert ping(b.node("h1"), "198.18.2.2")
        assert a.node("h1").netns != b.node("h1").netns
    assert not owned_namespaces(a.id) and not owned_namespaces(b.id)


def test_a_running_lab_name_is_taken(needs_root) -> None:
    topo = load_file(EXAMPLES / "demo.yaml")
    with Lab(topo, name="dupname"):
        with pytest.raises(LabError, match="a lab named 'dupname' is already running"):
            Lab(topo, name="dupname").up()


def test_failing_exec_rolls_back(needs_root) -> None:
    topo = load_text("name: ex\nnodes:\n  h1:\n    exec: [[sh, -c, 'echo broken >&2; exit 3']]\n", "yaml")
    lab = Lab(topo, unique=True)
    with pytest.raises(DeployError) as info:
        lab.up()
    assert info.value.step == "exec on h1: sh -c echo broken >&2; exit 3"
    assert "exited 3" in str(info.value) and "broken" in str(info.value)
    assert not owned_namespaces(lab.id)


def test_tun_interface_held_by_the_lab_answers_pings(needs_root) -> None:
    topo = load_text(
        "name: t\nnodes:\n  h1:\n    interfaces:\n      tun0: {type: tun, ipv4: [198.18.30.1/24]}\n", "yaml"
    )
    with Lab(topo, unique=True) as lab:
        dev = lab.device("h1", "tun0")
        proc = lab.node("h1").popen(["ping", "-c", "1", "-W", "5", "198.18.30.2"], stdout=-1)
        while True:
            frame = dev.recv()
            reply = pk.echo_reply(frame)
            if reply is not None:
                dev.send(reply)
                break
        assert proc.wait(10) == 0


def test_chain_of_100_nodes(needs_root) -> None:
    lab = Lab(load_file(EXAMPLES / "chain.yaml", {"n": 100}), unique=True)
    with lab:
        assert len(lab.nodes) == 100
        out = lab.node("n0").run(["ping", "-t", "255", "-c", "1", "-W", "3", "198.18.98.2"])
        assert out.code == 0, out.text
    assert not owned_namespaces(lab.id)


def test_lab_api_errors(needs_root) -> None:
    lab = Lab(load_file(EXAMPLES / "demo.yaml"), unique=True)
    with pytest.raises(LabError, match="is not up"):
        lab.node("h1")
    with lab:
        with pytest.raises(LabError, match="has no node 'zz'"):
            lab.node("zz")
        with pytest.raises(LabError, match="already up"):
            lab.up()
    with pytest.raises(TypeError):
        Lab({"name": "x"})  # type: ignore[arg-type]


def test_a_lab_brought_up_in_a_short_lived_thread_keeps_its_relays(needs_root) -> None:
    """Relay workers die with the thread that forked them (PDEATHSIG): they must not die with a
    worker thread that only ran Lab.up (a thread pool, asyncio's executor)."""
    import threading
    import time

    lab = Lab(load_file(EXAMPLES / "demo.yaml"), unique=True)
    t = threading.Thread(target=lab.up)
    t.start()
    t.join()
    try:
        time.sleep(0.3)  # a worker killed by its parent thread's exit would be gone by now
        assert all(p.poll() is None for r in lab._runtime().relays.values() for p in r._procs)
        assert ping(lab.node("h1"), "198.18.2.2")
    finally:
        lab.down()


def test_routes_the_kernel_takes_deploy(needs_root) -> None:
    """What validate lets through, the kernel takes: a route out of lo, a second route to a
    connected IPv4 subnet with a metric, one to a connected IPv6 subnet (its kernel route has
    metric 256), a link-local next hop with its interface."""
    text = textwrap.dedent(
        """
        name: routes
        nodes:
          h1:
            routes:
              - {dst: 198.18.33.0/24, dev: lo}
              - {dst: 198.18.32.0/24, via: 198.18.32.9, metric: 10}
              - {dst: 2001:db8:32::/64, via: 2001:db8:32::9}
              - {dst: 2001:db8:99::/64, via: fe80::9, dev: e0}
          h2: {}
        links:
          - endpoints:
              - {node: h1, interface: e0, ipv4: 198.18.32.1/24, ipv6: 2001:db8:32::1/64}
              - {node: h2, interface: e0, ipv4: 198.18.32.2/24, ipv6: 2001:db8:32::2/64}
        """
    )
    with Lab(load_text(text, "yaml"), unique=True) as lab:
        v4 = lab.node("h1").run(["ip", "route"]).stdout.decode()
        v6 = lab.node("h1").run(["ip", "-6", "route"]).stdout.decode()
    assert "198.18.33.0/24 dev lo" in v4
    assert "198.18.32.0/24 via 198.18.32.9 dev e0 proto static metric 10" in v4
    assert "2001:db8:32::/64 via 2001:db8:32::9 dev e0" in v6
    assert "2001:db8:99::/64 via fe80::9 dev e0" in v6
