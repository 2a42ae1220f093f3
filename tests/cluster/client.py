"""A client of the simulated cluster, run in its client namespace as a user's program would
(python client.py SCENARIO ...): it prints JSON lines the tests read."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from tunlab.cluster import ClusterLab
from tunlab.topologies import Topology


def say(**data: Any) -> None:
    print(json.dumps(data), flush=True)


def big_topology(name: str = "big") -> Topology:
    """30 nodes (10 a host), 40 links: a chain of veths and 11 chords, tun-pairs and veths,
    between the first and the second half (13 links cross between hosts)."""
    nodes = {f"n{i}": {} for i in range(30)}
    links: list[dict[str, Any]] = []

    def link(a: int, b: int, kind: str) -> None:
        li = len(links)
        links.append(
            {
                "type": kind,
                "name": f"l{li}",
                "endpoints": [
                    {"node": f"n{a}", "interface": f"x{li}", "ipv4": [f"198.18.{li}.1/24"]},
                    {"node": f"n{b}", "interface": f"x{li}", "ipv4": [f"198.18.{li}.2/24"]},
                ],
            }
        )

    for i in range(29):
        link(i, i + 1, "veth")
    for i in range(11):
        link(i, i + 15, "tun-pair" if i % 2 else "veth")
    return Topology.model_validate({"name": name, "nodes": nodes, "links": links})


def small_topology(name: str) -> Topology:
    return Topology.model_validate(
        {
            "name": name,
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}, "c": {"host": "h3"}},
            "links": [
                {"endpoints": [{"node": "a", "interface": "e0", "ipv4": ["198.18.1.1/24"]},
                               {"node": "b", "interface": "e0", "ipv4": ["198.18.1.2/24"]}]},
                {"type": "tun-pair",
                 "endpoints": [{"node": "b", "interface": "t0", "ipv4": ["198.18.2.1/24"]},
                               {"node": "c", "interface": "t0", "ipv4": ["198.18.2.2/24"]}]},
            ],
        }
    )  # fmt: skip


def what_it_holds(lab: ClusterLab) -> dict[str, Any]:
    """Per host: the lab's namespaces and wire ports, to check that nothing is left after."""
    seen = lab.inspect()["hosts"]
    ports: dict[str, list[int]] = {}
    assert lab.plan is not None
    for ends in lab.plan.wires.values():
        for end in ends:
            ports.setdefault(end.host, []).append(end.port)
    return {
        "namespaces": {h: [n["netns"] for n in part.get("nodes", {}).values()] for h, part in seen.items()},
        "ports": ports,
    }


def ping(lab: ClusterLab, node: str, address: str, *args: str) -> str:
    done = lab.node(node).run(["ping", *args, address], timeout=120)
    return done.text


def rtt(text: str) -> float:
    line = next(x for x in text.splitlines() if "min/avg/max" in x)
    return float(line.split("=")[1].split("/")[1])


def big() -> None:
    started = time.monotonic()
    lab = ClusterLab(big_topology(), cluster=None)
    lab.up()
    up_s = time.monotonic() - started
    assert lab.plan is not None
    crossing = sorted(lab.plan.wires)
    reached = {}
    for li in crossing:
        a = lab.topology.links[li].endpoints[0].node
        reached[li] = "1 received" in ping(lab, a, f"198.18.{li}.2", "-c1", "-W3")
    # one way: the chord l29 (n0 on h1 <-> n15 on h2, a veth), delayed a_to_b only
    base = rtt(ping(lab, "n0", "198.18.29.2", "-c10", "-i0.05"))
    lab.link("l29").impair(delay="50ms", direction="a_to_b")
    delayed = rtt(ping(lab, "n0", "198.18.29.2", "-c20", "-i0.05"))
    lab.link("l29").clear()
    lab.link("l29").impair(loss="10%", seed=7, direction="a_to_b")
    text = ping(lab, "n0", "198.18.29.2", "-c1000", "-i0.002", "-q", "-W1")
    loss = float(text.split("% packet loss")[0].split()[-1])
    stats = lab.link("l29").stats()
    lab.link("l29").clear()
    # TCP over a cross-host tun-pair: l30 (n1 on h1 <-> n16 on h2)
    gbit = iperf(lab.node("n16"), lab.node("n1"), "198.18.30.2")
    held = what_it_holds(lab)
    down_started = time.monotonic()
    problems = lab.down()
    say(
        up_s=up_s,
        down_s=time.monotonic() - down_started,
        hosts=sorted(set(lab.placement.values())),
        crossing=len(crossing),
        reached=reached,
        one_way_ms=delayed - base,
        base_rtt_ms=base,
        loss_percent=loss,
        loss_counted=stats["a_to_b_stats"].get("lost", 0),
        tcp_gbit=gbit,
        problems=problems,
        **held,
    )


def iperf(server: Any, client: Any, address: str) -> float:
    """TCP for 3 s from client to server's address: Gbit/s received (0 when it failed)."""
    server.run(["iperf3", "-s", "-D", "-1"])
    time.sleep(0.3)
    done = client.run(["iperf3", "-c", address, "-t", "3", "-J"], timeout=60)
    return json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9 if done.ok else 0.0


def local() -> None:
    """The same lab on one machine (run on a host): the baseline of benchmarks/cluster.py."""
    from tunlab.topologies import Lab

    started = time.monotonic()
    lab = Lab(big_topology("local")).up()
    up_s = time.monotonic() - started
    gbit = iperf(lab.node("n16"), lab.node("n1"), "198.18.30.2")
    lab.down()
    say(up_s=up_s, tcp_gbit=gbit)


def hold(name: str, size: str = "small") -> None:
    """Up (the small lab, or the 30-node one), ping across every link between hosts, say
    ready; down when stdin closes."""
    lab = ClusterLab(small_topology(name) if size == "small" else big_topology(name), cluster=None)
    lab.up()
    assert lab.plan is not None
    pings = []
    for li in sorted(lab.plan.wires):
        a = lab.topology.links[li].endpoints[0]
        address = str(lab.topology.links[li].endpoints[1].ipv4[0].ip)
        pings.append("1 received" in ping(lab, a.node, address, "-c1", "-W3"))
    say(ready=True, pings=pings, placement=lab.placement, **what_it_holds(lab))
    sys.stdin.read()
    say(problems=lab.down())


def watch(name: str) -> None:
    """Up, say ready, then wait for the lab to report a lost host; then down."""
    lab = ClusterLab(small_topology(name), cluster=None)
    lab.up()
    say(ready=True, **what_it_holds(lab))
    deadline = time.monotonic() + 60
    lost: dict[str, str] = {}
    while time.monotonic() < deadline and not lost:
        lost = {k: v for k, v in lab.health().items() if k.startswith("host ")}
        if not lost:
            time.sleep(0.05)
    seen_at = time.time()
    say(lost=lost, seen_at=seen_at, problems=lab.down())


def rows() -> None:
    """Every lab part on every host (what `tunlab ls --cluster` shows), as JSON."""
    from tunlab.cluster._connect import connect
    from tunlab.cluster._operations import cluster_labs

    client = connect(None)
    say(rows=cluster_labs(client))
    client.close()


if __name__ == "__main__":
    scenario, *rest = sys.argv[1:]
    {"big": big, "local": local, "hold": hold, "watch": watch, "rows": rows}[scenario](*rest)
