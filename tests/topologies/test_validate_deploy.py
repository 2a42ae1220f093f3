"""validate = deploy, as a property: a random topology that `validate` accepts comes up and goes
down cleanly on the real kernel, and one it refuses is refused before anything is made. The
generator mixes valid and invalid choices on purpose (names that collide with what the plan
makes, duplicate routes and vxlan identities, sysctl keys and values the kernel refuses), so
that validate and deploy cannot drift apart again.

TUNLAB_PROPERTY_EXAMPLES=N runs more examples than the suite's 100, and TUNLAB_PROPERTY_RANDOM=1 new ones
(the suite's are derandomized, so a run on CI is the run seen here)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tunlab.errors import DeployError, TopologyError
from tunlab.topologies import Lab, load_text
from tunlab.topologies._state import owned_namespaces

pytestmark = pytest.mark.root

EXAMPLES = int(os.environ.get("TUNLAB_PROPERTY_EXAMPLES", "100"))
GOOD_SYSCTLS: list[tuple[str, Any]] = [
    ("net.ipv4.ip_forward", 1),
    ("net.ipv6.conf.all.forwarding", 1),
    ("net.ipv4.conf.{iface}.rp_filter", 2),
    ("net.ipv4.ip_local_port_range", "20000 30000"),
    ("net.ipv4.tcp_congestion_control", "reno"),
    ("net.core.somaxconn", 512),
    ("net.ipv6.neigh.{iface}.retrans_time_ms", 500),
]
# at most one mistake per example; half of the examples have none and must come up
MISTAKES = ["none"] * 10 + [
    "iface-lo",
    "iface-generated",
    "bridge-lo",
    "bridge-port",
    "route-broadcast",
    "route-twice",
    "route-own-address",
    "sysctl-value",
    "sysctl-unknown",
    "sysctl-iface",
    "sysctl-host-only",
    "vxlan-twice",
]


@st.composite
def topologies(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A small lab as plain data (netns nodes; veth, bridge and vxlan links; addresses, MTUs,
    routes through neighbours, sysctls), valid by construction, with at most one mistake of
    a kind validate must refuse."""
    mistake = draw(st.sampled_from(MISTAKES))
    n = draw(st.integers(2, 4))
    nodes: dict[str, dict[str, Any]] = {f"n{i}": {} for i in range(n)}
    links: list[dict[str, Any]] = []
    # node -> [(its interface, its address, a neighbour's address on that link)]
    reach: dict[str, list[tuple[str, str, str]]] = {name: [] for name in nodes}
    for li in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["veth", "bridge"]))
        count = 2 if kind == "veth" else draw(st.integers(2, min(3, n)))
        members = draw(st.permutations(sorted(nodes)))[:count]
        mtu = draw(st.sampled_from([None, 1280, 1500, 9000]))
        endpoints = []
        for ei, node in enumerate(members):
            ep: dict[str, Any] = {"node": node, "interface": f"e{li}", "ipv4": f"198.18.{li}.{ei + 1}/24"}
            if draw(st.booleans()):
                ep["ipv6"] = f"2001:db8:{li}::{ei + 1}/64"
            if mtu is not None:
                ep["mtu"] = mtu
            endpoints.append(ep)
        for ei, node in enumerate(members):
            other = (ei + 1) % len(members)
            reach[node].append((f"e{li}", f"198.18.{li}.{ei + 1}", f"198.18.{li}.{other + 1}"))
        link: dict[str, Any] = {"type": kind, "endpoints": endpoints}
        if kind == "bridge" and draw(st.booleans()):
            link["name"] = f"br-{li}"
        links.append(link)
    vxlans = draw(st.integers(0, 2))
    for k in range(vxlans):  # over the first link, each with its own vni
        a, b = links[0]["endpoints"][0], links[0]["endpoints"][1]
        links.append(
            {
                "type": "vxlan",
                "vni": 100 + k,
                "endpoints": [
                    {"node": a["node"], "interface": f"vx{k}", "underlay": a["interface"]},
                    {"node": b["node"], "interface": f"vx{k}", "underlay": b["interface"]},
                ],
            }
        )
    for name in nodes:
        if reach[name] and draw(st.booleans()):
            routes = []
            for k in range(draw(st.integers(1, 3))):
                _iface, _mine, neighbour = draw(st.sampled_from(reach[name]))
                route: dict[str, Any] = {"dst": f"198.18.{100 + k}.0/24", "via": neighbour}
                if draw(st.booleans()):
                    route["metric"] = 10 + k
                routes.append(route)
            nodes[name]["routes"] = routes
        if reach[name] and draw(st.booleans()):
            key, value = draw(st.sampled_from(GOOD_SYSCTLS))
            nodes[name]["sysctls"] = {key.format(iface=reach[name][0][0]): value}
    _make_mistake(mistake, nodes, links, reach)
    return {"name": "prop", "nodes": nodes, "links": links}, mistake


def _make_mistake(
    mistake: str,
    nodes: dict[str, Any],
    links: list[dict[str, Any]],
    reach: dict[str, list[tuple[str, str, str]]],
) -> None:
    """One thing deploy would refuse, written into the lab."""
    first = links[0]
    node = first["endpoints"][0]["node"]
    iface, mine, neighbour = reach[node][0]
    if mistake == "iface-lo":
        first["endpoints"][0]["interface"] = "lo"
    elif mistake == "iface-generated":
        first["endpoints"][0]["interface"] = "tlx0v0"
    elif mistake in ("bridge-lo", "bridge-port"):
        first["type"] = "bridge"
        first["name"] = "lo" if mistake == "bridge-lo" else f"p0-{node}"
    elif mistake == "route-broadcast":
        nodes[node]["routes"] = [{"dst": "198.18.200.0/24", "via": "198.18.0.255"}]
    elif mistake == "route-twice":
        nodes[node]["routes"] = [{"dst": "default", "via": neighbour}, {"dst": "default", "via": neighbour}]
    elif mistake == "route-own-address":
        nodes[node]["routes"] = [{"dst": "198.18.200.0/24", "via": mine}]
    elif mistake == "sysctl-value":
        nodes[node]["sysctls"] = {"net.ipv4.ip_forward": "banana"}
    elif mistake == "sysctl-unknown":
        nodes[node]["sysctls"] = {"net.ipv4.nonexistent_knob": 1}
    elif mistake == "sysctl-iface":
        nodes[node]["sysctls"] = {"net.ipv4.conf.eth7.forwarding": 1}
    elif mistake == "sysctl-host-only":
        nodes[node]["sysctls"] = {"net.core.netdev_max_backlog": 2000}
    elif mistake == "vxlan-twice":
        a, b = first["endpoints"][0], first["endpoints"][1]
        for k in range(2):
            links.append(
                {
                    "type": "vxlan",
                    "vni": 42,
                    "endpoints": [
                        {"node": a["node"], "interface": f"vt{k}", "underlay": a["interface"]},
                        {"node": b["node"], "interface": f"vt{k}", "underlay": b["interface"]},
                    ],
                }
            )


def check_validate_equals_deploy(data: dict[str, Any], mistake: str = "none") -> None:
    text = json.dumps(data)
    try:
        topo = load_text(text, "json", "prop.json")
    except TopologyError as exc:
        event(f"refused ({mistake})")
        if mistake == "none":
            pytest.fail(f"validate refused a valid lab: {exc}\n{text}")
        return  # refused before anything was made: nothing to bring up
    event(f"accepted ({mistake}): brought up and down")
    assert mistake == "none", f"validate accepted a lab with the mistake {mistake!r}\n{text}"
    lab = Lab(topo, unique=True)
    try:
        lab.up()
    except DeployError as exc:
        pytest.fail(f"validate accepted what deploy refused: {exc}\n{text}")
    lab_id = lab.id
    problems = lab.down()
    assert problems == [], problems
    assert owned_namespaces(lab_id) == [], "down left namespaces"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("TUNLAB_PROPERTY_RANDOM") != "1",
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(topologies())
def test_what_validate_accepts_comes_up_and_goes_down(
    needs_root: None, lab: tuple[dict[str, Any], str]
) -> None:
    check_validate_equals_deploy(*lab)
