"""Placement, the split into host parts and the address rules: pure planning, no cluster."""

from __future__ import annotations

import pytest

from tunlab.cluster import ClusterError, check_address
from tunlab.cluster._connect import ClusterAddressError, Tls
from tunlab.cluster._plan import ClusterPlan, plan_lab
from tunlab.errors import TopologyError
from tunlab.topologies import Topology

HOSTS = {"h1": "198.18.250.10", "h2": "198.18.250.11", "h3": "198.18.250.12"}


def chain(n: int, **extra: object) -> Topology:
    nodes = {f"n{i}": {} for i in range(n)}
    links = [
        {
            "endpoints": [
                {"node": f"n{i}", "interface": "r", "ipv4": [f"198.18.{i}.1/24"]},
                {"node": f"n{i + 1}", "interface": "l", "ipv4": [f"198.18.{i}.2/24"]},
            ]
        }
        for i in range(n - 1)
    ]
    return Topology.model_validate({"name": "c", "nodes": nodes, "links": links, **extra})


def test_nodes_fill_hosts_in_file_order_so_neighbours_stay_together() -> None:
    plan = plan_lab(chain(9), HOSTS)
    assert plan.placement == {f"n{i}": f"h{i // 3 + 1}" for i in range(9)}
    assert sorted(plan.wires) == [2, 5]  # only the links between the blocks cross
    assert [len(p["links"]) for p in plan.parts.values()] == [3, 4, 3]


def test_a_pinned_node_counts_toward_its_host() -> None:
    topo = chain(6)
    topo.nodes["n0"].host = "h3"
    plan = plan_lab(topo, HOSTS)
    assert plan.placement["n0"] == "h3"
    counts = {h: list(plan.placement.values()).count(h) for h in HOSTS}
    assert counts == {"h1": 2, "h2": 2, "h3": 2}


def test_vms_are_balanced_by_memory() -> None:
    topo = Topology.model_validate(
        {
            "name": "vms",
            "nodes": {
                "big": {"kind": "vm", "memory": 2048},
                "small1": {"kind": "vm", "memory": 512},
                "small2": {"kind": "vm", "memory": 512},
                "small3": {"kind": "vm", "memory": 512},
                "small4": {"kind": "vm", "memory": 512},
            },
        }
    )
    plan = plan_lab(topo, {"h1": "198.18.250.10", "h2": "198.18.250.11"})
    on_big = [n for n, h in plan.placement.items() if h == plan.placement["big"]]
    assert on_big == ["big"]  # the four small ones (2 GiB together) balance the big one


def test_a_cross_host_link_becomes_a_wire_on_each_side_with_its_own_direction() -> None:
    topo = Topology.model_validate(
        {
            "name": "x",
            "nodes": {"n0": {"host": "h1"}, "n1": {"host": "h2"}},
            "links": [
                {
                    "endpoints": ["n0:e", "n1:e"],
                    "impair": {"a_to_b": {"delay": "50ms"}, "b_to_a": {"loss": "10%"}},
                }
            ],
        }
    )
    plan = plan_lab(topo, HOSTS)
    (first, second) = plan.wires[0]
    plan.connect({(0, "h1"): 4001, (0, "h2"): 4002})
    w1 = plan.parts["h1"]["links"][first.local_index]
    w2 = plan.parts["h2"]["links"][second.local_index]
    assert (w1["type"], w1["layer"], w1["local"], w1["peer"]) == ("wire", "tap", HOSTS["h1"], HOSTS["h2"])
    assert (w1["port"], w1["peer_port"], w2["port"], w2["peer_port"]) == (4001, 4002, 4002, 4001)
    assert w1["impair"] == {"a_to_b": {"delay": 50.0}}  # what leaves n0 is delayed on h1
    assert w2["impair"] == {"a_to_b": {"loss": 10.0}}  # what leaves n1 is lost on h2
    assert set(plan.parts) == {"h1", "h2"}  # h3 holds nothing, so it has no part


def test_a_tun_pair_crosses_as_a_tun_wire_keeping_its_offload() -> None:
    topo = Topology.model_validate(
        {
            "name": "t",
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}},
            "links": [{"type": "tun-pair", "offload": False, "endpoints": ["a:t0", "b:t0"]}],
        }
    )
    plan = plan_lab(topo, HOSTS)
    wire = plan.parts["h1"]["links"][0]
    assert (wire["layer"], wire["offload"]) == ("tun", False)


def test_the_summary_gives_other_clients_the_same_routes() -> None:
    plan = plan_lab(chain(9), HOSTS)
    plan.connect({(li, e.host): 5000 + li for li, ends in plan.wires.items() for e in ends})
    again = ClusterPlan.from_summary({**plan.summary(), "hosts": dict.fromkeys(plan.parts, "tls://x")})
    assert again.placement == plan.placement
    assert again.local == plan.local
    assert again.wires == plan.wires


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hosts": ["h1", "h9"]}, "hosts[1]: host 'h9' is not in the cluster (its hosts: h1, h2, h3)"),
        ({"hosts": ["h1", "h1"]}, "hosts[1]: host 'h1' is listed twice"),
        ({"hosts": [{"name": "h7", "underlay": "198.18.9.9"}]}, "hosts[0].name: host 'h7' is not in"),
        ({"nodes": {"a": {"host": "h4"}}}, "nodes.a.host: host 'h4' is not in the cluster"),
        (
            {"hosts": ["h1"], "nodes": {"a": {"host": "h2"}}},
            "nodes.a.host: host 'h2' is not in the lab's hosts",
        ),
    ],
)
def test_placement_errors_name_the_field(data: dict[str, object], message: str) -> None:
    topo = Topology.model_validate({"name": "p", "nodes": {"a": {}}, **data})
    with pytest.raises(TopologyError, match="lab.yaml: ") as err:
        plan_lab(topo, HOSTS, "lab.yaml")
    assert message in str(err.value)


def test_a_link_type_that_cannot_span_hosts_is_refused_before_anything() -> None:
    topo = Topology.model_validate(
        {
            "name": "b",
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}, "c": {"host": "h2"}},
            "links": [{"type": "bridge", "endpoints": ["a:e0", "b:e0", "c:e0"]}],
        }
    )
    with pytest.raises(TopologyError, match=r"links\[0\].endpoints: a bridge link cannot span hosts"):
        plan_lab(topo, HOSTS)


def test_kernel_impairment_cannot_cross_hosts() -> None:
    topo = chain(
        2, links=[{"endpoints": ["n0:e", "n1:e"], "impair": {"rate": "10mbit"}, "impair_via": "kernel"}]
    )
    topo.nodes["n1"].host = "h2"
    with pytest.raises(TopologyError, match=r"links\[0\].impair_via: .* use impair_via: relay"):
        plan_lab(topo, HOSTS)


def test_an_address_in_the_plan_is_checked_like_any_lab() -> None:
    topo = Topology.model_validate(
        {
            "name": "v",
            "nodes": {"a": {"host": "h1"}, "vm": {"kind": "vm", "host": "h2"}},
            "links": [{"type": "tun-pair", "endpoints": ["a:t0", "vm:eth0"]}],
        }
    )
    with pytest.raises(TopologyError, match="host 'h2'.*needs layer: tap"):
        plan_lab(topo, HOSTS)


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.0.0.1:8786",
        "127.0.0.1:8786",
        "tcp://localhost:1",
        "tcp://[::1]:8786",
        "tls://198.18.250.1:8786",
    ],
)
def test_addresses_that_need_no_permission(address: str) -> None:
    assert check_address(address).split("://")[0] in ("tcp", "tls")


def test_plain_tcp_to_another_machine_needs_insecure() -> None:
    with pytest.raises(ClusterAddressError, match="use tls:// .* or pass --insecure"):
        check_address("tcp://198.18.250.1:8786")
    assert check_address("tcp://198.18.250.1:8786", insecure=True) == "tcp://198.18.250.1:8786"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("udp://h:1", "not udp://"),
        ("tcp://h", "write it as tcp://HOST:PORT"),
        ("", "expected SCHEME://HOST:PORT"),
    ],
)
def test_bad_addresses(address: str, message: str) -> None:
    with pytest.raises(ClusterAddressError, match=message):
        check_address(address)


def test_tls_names_the_missing_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in ("TUNLAB_TLS_CA", "TUNLAB_TLS_CERT", "TUNLAB_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ClusterError, match="--tls-ca or set TUNLAB_TLS_CA, TUNLAB_TLS_CERT, TUNLAB_TLS_KEY"):
        Tls.from_env().security()
    monkeypatch.setenv("TUNLAB_TLS_CA", str(tmp_path / "ca.pem"))
    with pytest.raises(ClusterError, match="tls ca file .*ca.pem' cannot be read"):
        Tls.from_env(cert="c", key="k").security()


def test_a_veth_over_vxlan_becomes_a_vxlan_wire_given_its_vni_at_both_ends() -> None:
    topo = Topology.model_validate(
        {
            "name": "v",
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}},
            "links": [{"transport": "vxlan", "impair": {"rate": "10mbit"}, "endpoints": ["a:e0", "b:e0"]}],
        }
    )
    plan = plan_lab(topo, HOSTS)
    assert plan.vxlan() == [0]
    plan.give_vnis({0: 70000})
    plan.connect({})  # no UDP port to reserve: the vxlan port
    for host in ("h1", "h2"):
        wire = plan.parts[host]["links"][0]
        assert (wire["transport"], wire["vni"], wire["port"], wire["layer"]) == ("vxlan", 70000, 4789, "tap")
    assert ClusterPlan.from_summary({**plan.summary(), "hosts": {}}).vnis == {0: 70000}


def test_a_tun_pair_cannot_cross_over_vxlan() -> None:
    topo = Topology.model_validate(
        {
            "name": "v",
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}},
            "links": [{"type": "tun-pair", "transport": "vxlan", "endpoints": ["a:t0", "b:t0"]}],
        }
    )
    with pytest.raises(TopologyError, match=r"links\[0\].transport: vxlan carries Ethernet frames"):
        plan_lab(topo, HOSTS)


def test_a_hosts_entry_gives_the_underlay_cross_host_links_use() -> None:
    topo = Topology.model_validate(
        {
            "name": "u",
            "hosts": ["h1", {"name": "h2", "underlay": "198.18.251.2"}],
            "nodes": {"a": {"host": "h1"}, "b": {"host": "h2"}},
            "links": [{"endpoints": ["a:e0", "b:e0"]}],
        }
    )
    plan = plan_lab(topo, HOSTS)
    assert plan.underlay == {"h1": HOSTS["h1"], "h2": "198.18.251.2"}
    assert plan.parts["h1"]["links"][0]["peer"] == "198.18.251.2"
    assert plan.parts["h2"]["links"][0]["local"] == "198.18.251.2"
