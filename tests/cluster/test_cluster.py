"""Labs across three simulated hosts: each a network namespace running `dask worker` on an
underlay bridge, the scheduler and clients in a fourth (tunlab.cluster.SimulatedCluster).

The clients are programs run in the client namespace (client.py, the `tunlab` command), as a
user runs them; the checks look at every host afterwards: no namespace, port, process or
state file of a lab may be left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import require_tool
from tunlab._linux.netns import list_named_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]
CLIENT = str(Path(__file__).with_name("client.py"))
TUNLAB = [sys.executable, "-m", "tunlab._cli.main"]


@pytest.fixture(scope="module")
def sim(needs_root: None) -> Iterator[Any]:
    pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is not installed")
    require_tool("openssl")
    from tunlab.cluster import SimulatedCluster

    cluster = SimulatedCluster(3).start()
    try:
        yield cluster
    finally:
        cluster.close()
    assert not any(n.startswith(cluster.prefix) for n in list_named_netns())


def client(sim: Any, *args: str) -> subprocess.Popen[bytes]:
    return sim.client_ns.popen(
        [sys.executable, CLIENT, *args],
        env=sim.client_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def said(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The client's next JSON line (its stderr when it ended instead)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"the client ended ({proc.returncode}): {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
    return dict(json.loads(line))


def rows(sim: Any) -> list[dict[str, Any]]:
    """Every lab part on every host, as `tunlab ls --cluster` lists them."""
    done = sim.run_client([sys.executable, CLIENT, "rows"], timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return list(json.loads(done.stdout)["rows"])


def tunlab(sim: Any, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return sim.run_client([*TUNLAB, *argv], timeout=180)


def nothing_left(sim: Any, held: dict[str, Any]) -> None:
    """Every host: none of the lab's namespaces, no socket on its wire ports, no state file,
    no relay worker (each host's state files listed them)."""
    present = set(list_named_netns())
    for host, names in held["namespaces"].items():
        assert not present & set(names), f"{host} keeps {present & set(names)}"
    for host, ports in held["ports"].items():
        udp = sim.run_on(host, ["cat", "/proc/net/udp", "/proc/net/udp6"]).stdout.decode()
        bound = {int(line.split()[1].rsplit(":", 1)[1], 16) for line in udp.splitlines()[1:] if ":" in line}
        assert not bound & set(ports), f"{host} still binds {bound & set(ports)}"
    for host in sim.names:
        labs = list((sim.dir / host / "run").rglob("*.json"))
        assert labs == [], f"{host} keeps state files {labs}"
        assert b"no labs" in sim.run_on(host, [*TUNLAB, "ls"]).stdout


def test_a_30_node_lab_across_three_hosts(sim: Any) -> None:
    proc = client(sim, "big")
    out = said(proc)
    proc.wait(60)
    assert out["hosts"] == ["h1", "h2", "h3"]
    assert out["crossing"] >= 10
    assert all(out["reached"].values()), out["reached"]  # a ping crossed every cross-host link
    assert 45.0 <= out["one_way_ms"] <= 55.0, out  # delay: 50ms on a_to_b of a cross-host link
    assert 7.0 <= out["loss_percent"] <= 13.0, out  # loss: 10% over 1,000 packets
    assert out["loss_counted"] > 0  # counted by the relay that sends that way
    assert out["tcp_gbit"] > 0  # TCP crossed a cross-host tun-pair (its speed: benchmarks/cluster.py)
    assert out["problems"] == []
    nothing_left(sim, out)


def test_two_labs_from_two_clients_do_not_collide(sim: Any) -> None:
    first, second = client(sim, "hold", "one", "big"), client(sim, "hold", "two", "big")
    try:
        a, b = said(first), said(second)
        assert len(a["pings"]) == 13 and all(a["pings"]) and all(b["pings"])  # same addresses, own links
        labs = {(r["lab"], r["host"]) for r in rows(sim) if r["running"]}
        assert labs == {(lab, h) for lab in ("one", "two") for h in ("h1", "h2", "h3")}
    finally:
        for proc in (first, second):
            proc.stdin.close()  # type: ignore[union-attr]
    assert said(first)["problems"] == [] and said(second)["problems"] == []
    for proc in (first, second):
        proc.wait(60)
    nothing_left(sim, a)
    nothing_left(sim, b)


def test_a_killed_worker_is_reported_and_down_reaches_the_rest(sim: Any) -> None:
    proc = client(sim, "watch", "lose")
    held = said(proc)
    killed_at = time.time()
    sim.kill("h3")
    out = said(proc)
    proc.wait(60)
    assert list(out["lost"]) == ["host h3"], out
    assert out["seen_at"] - killed_at < 30  # the latency is measured in benchmarks/cluster.py
    assert any(p.startswith("host h3: not reachable") for p in out["problems"]), out["problems"]
    left = [n for n in held["namespaces"]["h3"] if n in list_named_netns()]
    assert left, "a killed host keeps its part until its own gc"
    gc = sim.run_on("h3", [*TUNLAB, "gc"])
    assert b"lab lose" in gc.stdout, gc.stdout
    sim.start_worker("h3")
    sim.wait_for_workers(["h3"])
    nothing_left(sim, held)


def test_a_killed_client_leaves_a_foreground_lab_to_gc(sim: Any) -> None:
    proc = client(sim, "hold", "orphan")
    held = said(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(3.5)  # the parts have not heard from it for three heartbeats
    done = tunlab(sim, "gc")
    text = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert text.count("lab orphan: its client was gone") == 3, text
    assert "record of lab orphan" in text
    nothing_left(sim, held)
    assert b"no labs on the cluster" in tunlab(sim, "ls").stdout


def test_the_command_line_drives_a_detached_lab(sim: Any, tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        "name: cli\n"
        "nodes: {a: {host: h1}, b: {host: h2}}\n"
        "links:\n"
        "  - name: ab\n"
        "    endpoints: [{node: a, interface: e0, ipv4: [198.18.5.1/24]}, {node: b, interface: e0, ipv4: [198.18.5.2/24]}]\n"
    )
    up = tunlab(sim, "up", "-d", str(lab))
    assert up.returncode == 0, up.stderr
    try:
        assert b"1 link(s) cross between hosts" in up.stdout
        ping = tunlab(sim, "exec", "cli", "a", "--", "ping", "-c1", "-W3", "198.18.5.2")
        assert ping.returncode == 0 and b"1 received" in ping.stdout
        missing = tunlab(sim, "exec", "cli", "zz", "--", "true")
        assert missing.returncode == 2 and b"has no node 'zz'" in missing.stderr
        failing = tunlab(sim, "exec", "cli", "a", "--", "false")
        assert failing.returncode == 1  # the command's own exit status
        impaired = tunlab(sim, "impair", "cli", "ab", "delay=20ms", "--direction", "b_to_a", "--json")
        assert json.loads(impaired.stdout)["b_to_a"] == "netem limit 1000 delay 20ms"
        inspect = tunlab(sim, "inspect", "cli", "--json")
        assert set(json.loads(inspect.stdout)["hosts"]) == {"h1", "h2"}
        ps = tunlab(sim, "ps", "cli", "--json")
        assert set(json.loads(ps.stdout)) == {"a", "b"}
        pcap = tmp_path / "b.pcap"
        cap = sim.client_ns.popen(
            [*TUNLAB, "capture", "cli", "b", "e0", "-o", str(pcap), "--count", "2", "--seconds", "30"],
            env=sim.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(2)  # the capture is open on h2
        tunlab(sim, "exec", "cli", "a", "--", "ping", "-c", "3", "-i", "0.2", "198.18.5.2")
        out, err = cap.communicate(timeout=60)
        assert cap.returncode == 0, err
        assert b"2 packet(s)" in out and pcap.read_bytes()[:4] == bytes.fromhex("d4c3b2a1")
    finally:
        down = tunlab(sim, "down", "cli")
    assert down.returncode == 0 and b"lab cli is down on the cluster" in down.stdout
    assert b"no labs on the cluster" in tunlab(sim, "ls").stdout


def test_validate_names_a_host_the_cluster_lacks(sim: Any, tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: v\nnodes: {a: {host: h9}}\n")
    done = tunlab(sim, "validate", str(lab))
    assert done.returncode == 2
    assert b"nodes.a.host: host 'h9' is not in the cluster (its hosts: h1, h2, h3)" in done.stderr


def test_plain_tcp_to_a_remote_scheduler_is_refused_before_connecting(sim: Any) -> None:
    done = sim.run_client([*TUNLAB, "ls", "--cluster", "tcp://198.18.250.1:8786"], timeout=60)
    assert done.returncode == 2
    assert b"pass --insecure" in done.stderr
    assert b"Traceback" not in done.stderr


def test_the_plugin_brings_topology_labs_up_across_the_cluster(sim: Any, tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(
        "name: plug\n"
        "nodes: {a: {host: h1}, b: {host: h3}}\n"
        "links: [{endpoints: [{node: a, interface: e0, ipv4: [198.18.6.1/24]}, "
        "{node: b, interface: e0, ipv4: [198.18.6.2/24]}]}]\n"
    )
    (tmp_path / "test_lab.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.topology('lab.yaml')\n"
        "def test_across(topology):\n"
        "    assert topology.placement == {'a': 'h1', 'b': 'h3'}\n"
        "    assert topology.node('a').run(['ping', '-c1', '-W3', '198.18.6.2']).ok\n"
    )
    done = sim.run_client(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_lab.py"),
         "--tunlab-cluster", sim.address, "--rootdir", str(tmp_path)]
    )  # fmt: skip
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-2000:]
    assert b"1 passed" in done.stdout
    assert b"no labs on the cluster" in tunlab(sim, "ls").stdout


def test_links_over_kernel_vxlan_between_hosts(sim: Any) -> None:
    from tunlab.cluster import ClusterLab
    from tunlab.topologies import Topology

    def lab(name: str) -> Any:
        ends = [
            {"node": "a", "interface": "e0", "ipv4": ["198.18.8.1/24"]},
            {"node": "b", "interface": "e0", "ipv4": ["198.18.8.2/24"]},
        ]
        slow = [
            {"node": "a", "interface": "e1", "ipv4": ["198.18.9.1/24"]},
            {"node": "b", "interface": "e1", "ipv4": ["198.18.9.2/24"]},
        ]
        topo = Topology.model_validate(
            {
                "name": name,
                "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}},
                "links": [
                    {"name": "fast", "transport": "vxlan", "endpoints": ends},
                    {
                        "name": "slow",
                        "transport": "vxlan",
                        "impair": {"a_to_b": {"delay": "30ms"}},
                        "endpoints": slow,
                    },
                ],
            }
        )
        return ClusterLab(topo, cluster=sim.client())

    with lab("vx1") as one, lab("vx2") as two:
        assert not set(one.plan.vnis.values()) & set(two.plan.vnis.values())  # each lab its own
        for each in (one, two):
            shown = each.node("a").run(["ip", "-d", "link", "show", "e0"]).text
            assert f"vxlan id {each.plan.vnis[0]}" in shown and "mtu 1450" in shown  # underlay less 50
            assert each.node("a").run(["ping", "-c1", "-W3", "198.18.8.2"]).ok
        done = one.node("a").run(["ping", "-c3", "-i0.2", "198.18.9.2"])
        times = [float(x.split("time=")[1].split()[0]) for x in done.text.splitlines() if "time=" in x]
        assert done.ok and min(times) >= 30.0  # a_to_b delayed where it leaves h1
        assert one.link("slow").stats()["a_to_b"] == "netem limit 1000 delay 30ms"


def test_a_foreground_lab_ends_by_itself_once_its_client_is_gone(sim: Any) -> None:
    proc = client(sim, "hold", "alone")
    held = said(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 30  # the parts wait ORPHAN_AFTER (10 s) of silence
    while time.monotonic() < deadline and any(r["running"] for r in rows(sim) if r["lab"] == "alone"):
        time.sleep(1)
    assert not any(r["running"] for r in rows(sim) if r["lab"] == "alone")
    nothing_left(sim, held)
    tunlab(sim, "gc")  # the record of a lab no host holds any more
    assert b"alone" not in tunlab(sim, "ls").stdout
