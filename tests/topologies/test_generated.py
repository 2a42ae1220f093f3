"""Generated topology documents: either they load (and, as root, come up and go away leaving
nothing), or they are refused with exit 2 and a message that names a field or the file —
never a traceback, never a hang (each example has a deadline), never a half-made lab."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import HAS_TUN, IS_ROOT
from tunlab.errors import TopologyError
from tunlab.topologies import Lab, load_text
from tunlab.topologies._state import owned_namespaces

NODES = ["h1", "h2", "r1", "x y", "n" * 40]
IFACES = ["eth0", "eth1", "tun0", "lo", "a/b", "e" * 16]
V4 = ["198.18.{}.1/24", "198.18.{}.2/24", "198.18.{}.0/24", "198.18.{}.300/24", "bogus"]


def _addr(draw: Any, i: int) -> str:
    return draw(st.sampled_from(V4)).format(i)


@st.composite
def documents(draw: Any, *, sane: bool = False) -> dict[str, Any]:
    """Topology-shaped data: mostly plausible, with a sprinkle of every kind of mistake."""
    names = NODES[:3] if sane else NODES
    nodes: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        node: dict[str, Any] = {}
        if not sane and draw(st.booleans()):
            node[draw(st.sampled_from(["sysctls", "sysctl", "image", "kind", "exec", "env"]))] = draw(
                st.sampled_from([{}, [], "x", 3, {"net.ipv4.ip_forward": 1}, [["true"]], None])
            )
        if draw(st.booleans()):
            node["sysctls"] = {"net.ipv4.ip_forward": 1}
        nodes[name] = node
    links = []
    node_names = list(nodes)
    for i in range(draw(st.integers(0, 3 if len(node_names) > 1 else 0))):
        a, b = draw(st.permutations(node_names))[:2] if len(node_names) > 1 else (node_names[0],) * 2
        kind = draw(st.sampled_from(["veth", "veth", "tun-pair", "bridge"] + ([] if sane else ["wire"])))
        ifname = f"e{i}" if sane else draw(st.sampled_from([*IFACES, f"e{i}"]))
        ends = [
            {"node": a, "interface": ifname, "ipv4": [V4[0].format(i) if sane else _addr(draw, i)]},
            {"node": b, "interface": f"e{i}", "ipv4": [V4[1].format(i)]},
        ]
        link: dict[str, Any] = {"type": kind, "endpoints": ends}
        if not sane and draw(st.booleans()):
            link[draw(st.sampled_from(["mtu", "offload", "vni", "endpointz"]))] = draw(
                st.sampled_from([1400, 10, 70000, "on", True, -1])
            )
        links.append(link)
    doc: dict[str, Any] = {
        "name": draw(st.sampled_from(["gen", "gen-2"] + ([] if sane else ["bad name", ""]))),
        "nodes": nodes,
        "links": links,
    }
    if not sane and draw(st.booleans()):
        doc[draw(st.sampled_from(["vars", "defaults", "lnks"]))] = draw(
            st.sampled_from([{}, {"kind": "vm"}, []])
        )
    return doc


def _text(doc: dict[str, Any], fmt: str) -> str:
    return json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.sampled_from(["yaml", "json"]))
def test_a_document_loads_or_is_refused_naming_a_field(doc: dict[str, Any], fmt: str) -> None:
    path = f"gen.{fmt}"
    try:
        load_text(_text(doc, fmt), fmt, path)
    except TopologyError as exc:
        text = str(exc)
        assert text.startswith(path), text  # every line names the file
        assert all(line.startswith(path) for line in text.splitlines()), text


@pytest.mark.root
@pytest.mark.skipif(not (IS_ROOT and HAS_TUN), reason="bringing labs up needs root and /dev/net/tun")
@settings(max_examples=15, deadline=20000, suppress_health_check=[HealthCheck.too_slow])
@given(documents(sane=True))
def test_a_document_that_loads_comes_up_and_leaves_nothing(doc: dict[str, Any]) -> None:
    try:
        topo = load_text(_text(doc, "yaml"), "yaml", "gen.yaml")
    except TopologyError:
        return
    lab = Lab(topo, unique=True)
    with lab:  # a valid document must deploy: validate catches what deploy would refuse
        assert set(lab.nodes) == set(topo.nodes)
    assert not owned_namespaces(lab.id)
