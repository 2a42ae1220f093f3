"""Every model rule and error message (no root needed: nothing is created)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tunlab.errors import TopologyError
from tunlab.topologies import load_file, load_text
from tunlab.topologies._models import Topology


def load(yaml_text: str, **variables):
    return load_text(textwrap.dedent(yaml_text), "yaml", "lab.yaml", variables)


def error_of(yaml_text: str, **variables) -> str:
    with pytest.raises(TopologyError) as info:
        load(yaml_text, **variables)
    return str(info.value)


BASE = """
name: t
nodes:
  h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}
  h2: {interfaces: {eth0: {ipv4: [198.18.1.2/24]}}}
links:
  - endpoints: ["h1:eth0", "h2:eth0"]
"""


def test_a_valid_topology_with_every_link_type() -> None:
    topo = load(
        """
        name: all-links
        defaults: {sysctls: {net.ipv4.ip_forward: 1}, env: {A: "1"}}
        nodes:
          h1:
            env: {B: "2"}
            interfaces:
              eth0: {ipv4: 198.18.1.1/24, mtu: 9000, offload: {gro: on, tso: off}}
              tap0: {type: tap, mac: "02:00:5e:00:53:01", ipv4: [198.18.9.1/24], offload: true, multi_queue: true}
            routes: [{dst: 198.18.3.0/24, via: 198.18.1.2}, {dst: default6, dev: tp0}]
          h2:
            interfaces: {eth0: {ipv4: [198.18.1.2/24]}, eth1: {ipv4: [198.18.2.2/24]}}
          h3: {}
        links:
          - endpoints: ["h1:eth0", "h2:eth0"]
          - type: bridge
            name: sw0
            endpoints: [{node: h2, interface: eth1}, {node: h3, interface: eth1, ipv4: [198.18.2.3/24]}]
          - type: tun-pair
            offload: false
            workers: threads
            endpoints:
              - {node: h1, interface: tp0, ipv6: ["2001:db8:5::1/64"]}
              - {node: h3, interface: tp0, ipv6: ["2001:db8:5::2/64"]}
          - type: vxlan
            vni: 42
            endpoints:
              - {node: h2, interface: vx0, underlay: eth1, ipv4: [198.18.7.2/24]}
              - {node: h3, interface: vx0, underlay: eth1, ipv4: [198.18.7.3/24]}
        """
    )
    nodes = topo.resolved_nodes()
    assert nodes["h1"].sysctls == {"net.ipv4.ip_forward": 1}
    assert nodes["h1"].env == {"A": "1", "B": "2"}  # dicts are merged, node keys win
    assert nodes["h3"].kind == "netns"
    assert topo.links[0].type == "veth"
    assert topo.nodes["h1"].interfaces["eth0"].offload.wanted() == {"gro": True, "tso": False}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace('"h2:eth0"]', '"h9:eth0"]'), "links[0].endpoints[1]: node 'h9' is not defined"),
        (
            BASE.replace('"h2:eth0"]', '"h2:eth0-way-too-long"]'),
            "links[0].endpoints[1].interface: interface name 'eth0-way-too-long' is longer than 15 bytes",
        ),
        (BASE.replace('"h2:eth0"]', '"h2"]'), "write it as 'node:interface'"),
        (
            BASE + '  - endpoints: ["h1:eth0", "h2:eth1"]\n',
            "links[1].endpoints[0]: interface 'h1:eth0' is already used by links[0].endpoints[0]",
        ),
        (
            BASE.replace("198.18.1.2/24", "198.18.1.1/24"),
            "address 198.18.1.1 is also on h1:eth0 on this link",
        ),
        (
            BASE.replace("198.18.1.2/24", "198.18.1.0/24"),
            "198.18.1.0/24 is the network address of 198.18.1.0/24",
        ),
        (BASE.replace("198.18.1.2/24", "198.18.1.255/24"), "is the broadcast address"),
        (BASE.replace("198.18.1.2/24", "198.18.1.300/24"), "nodes.h2.interfaces.eth0.ipv4[0]"),
        (
            BASE.replace("{ipv4: [198.18.1.2/24]}", "{ipv4: [198.18.1.2/24], speed: 10}"),
            "nodes.h2.interfaces.eth0.speed: unknown field",
        ),
        (BASE.replace("name: t", "name: 'bad name'"), "name: String should match pattern"),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: default, via: 198.18.9.9}], interfaces"),
            "nodes.h2.routes[0].via: next hop 198.18.9.9 is on no segment connected to 'h2'",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: 198.18.5.0/24, dev: eth7}], interfaces"),
            "nodes.h2.routes[0].dev: node 'h2' has no interface 'eth7'",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: 198.18.5.0/24}], interfaces"),
            "a route needs 'via'",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: nowhere, dev: eth0}], interfaces"),
            "'nowhere' is not a prefix",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: default, via: '2001:db8::1'}], interfaces"),
            "on no segment connected",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {exec: ['ping -c1 x'], interfaces"),
            "exec entries are argv lists",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {sysctls: {kernel.panic: 1}, interfaces"),
            "only per-namespace net.* keys",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {kind: container, interfaces"),
            "nodes.h2.image: a container node needs an image",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {image: alpine, interfaces"),
            "nodes.h2.image: 'image' is for kind: container or vm nodes",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {kind: router, interfaces"),
            "nodes.h2.kind: Input should be 'netns', 'container' or 'vm'",
        ),
        (
            BASE + "  - type: vxlan\n    endpoints: ['h1:vx0', 'h2:vx0']\n",
            "links[1].vni: a vxlan link needs a vni",
        ),
        (
            BASE + "  - type: tun-pair\n    endpoints: ['h1:t0', 'h2:t0', 'h2:t1']\n",
            "links[1].endpoints: a tun-pair link has exactly 2 endpoints, not 3",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}, lost0: {mtu: 1400}}}",
            ),
            "nodes.h1.interfaces.lost0: this interface is not connected by any link and has no type",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}, tun0: {type: tun, mac: '02:00:00:00:00:01'}}}",
            ),
            "a tun (L3) device has no MAC",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}, t0: {type: tun, ipv4: [198.18.1.9/25]}}}",
            ),
            "overlaps 198.18.1.1/24 on eth0 in node 'h1'",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24], mac: '01:00:5e:00:00:01'}}}",
            ),
            "multicast address",
        ),
        (
            BASE.replace("h2: {interfaces", "h2: {routes: [{dst: default, via: 198.18.1.2}], interfaces"),
            "nodes.h2.routes[0].via: next hop 198.18.1.2 is an address of 'h2' itself",
        ),
        (  # the next hop is on eth0's segment, but the route says it is on t0
            BASE.replace(
                "h2: {interfaces: {eth0: {ipv4: [198.18.1.2/24]}}}",
                "h2: {routes: [{dst: default, via: 198.18.1.1, dev: t0}], "
                "interfaces: {eth0: {ipv4: [198.18.1.2/24]}, t0: {type: tun, ipv4: [198.18.4.1/24]}}}",
            ),
            "nodes.h2.routes[0].via: next hop 198.18.1.1 is on no segment connected to 'h2'",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24], ipv6: ['2001:db8::1/64']}, "
                "t0: {type: tun, ipv6: ['2001:db8::1/120']}}}",
            ),
            "nodes.h1.interfaces.t0.ipv6: address 2001:db8::1 is also on h1:eth0",
        ),
        (
            BASE.replace(
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
                "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24], ipv6: ['2001:db8::1/64']}, "
                "t0: {type: tun, ipv6: ['2001:db8::2:1/112']}}}",
            ),
            "2001:db8::2:1/112 on t0 overlaps 2001:db8::1/64 on eth0 in node 'h1'",
        ),
        (
            BASE.replace("ipv4: [198.18.1.2/24]", "ipv4: [198.18.1.2/24], mtu: 70000"),
            "nodes.h2.interfaces.eth0.mtu: Input should be less than or equal to 65535",
        ),
    ],
)
def test_rule_messages_name_the_field(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_link_local_ipv6_addresses_on_two_interfaces_do_not_overlap() -> None:
    load(
        BASE.replace(
            "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24]}}}",
            "h1: {interfaces: {eth0: {ipv4: [198.18.1.1/24], ipv6: ['fe80::1/64']}, "
            "t0: {type: tun, ipv6: ['fe80::2/64']}}}",
        )
    )


def test_errors_point_at_the_file_line() -> None:
    text = BASE.replace('"h2:eth0"]', '"h9:eth0"]')
    message = error_of(text)
    line = next(i for i, ln in enumerate(textwrap.dedent(text).splitlines(), 1) if "h9:eth0" in ln)
    assert f"lab.yaml:{line}: links[0].endpoints[1]" in message


def test_duplicate_keys_are_an_error() -> None:
    message = error_of(BASE.replace("  h2: {interfaces", "  h1: {}\n  h2: {interfaces"))
    assert "duplicate key 'h1'" in message
    assert "lab.yaml:" in message


def test_several_problems_are_reported_together() -> None:
    message = error_of(BASE.replace('"h2:eth0"]', '"h9:eth0"]').replace("198.18.1.1/24", "198.18.1.0/24"))
    assert "node 'h9' is not defined" in message
    assert "network address" in message


def test_templating_with_vars_and_overrides() -> None:
    text = """
    name: chain
    vars: {n: 3, mtu: 1400}
    nodes:
    {% for i in range(n) %}
      n{{ i }}: {}
    {% endfor %}
    links:
    {% for i in range(n - 1) %}
      - endpoints: ["n{{ i }}:right", "n{{ i + 1 }}:left"]
        mtu: {{ mtu }}
    {% endfor %}
    """
    topo = load(text)
    assert sorted(topo.nodes) == ["n0", "n1", "n2"]
    assert topo.links[0].mtu == 1400
    bigger = load(text, n=5, mtu=9000)
    assert len(bigger.nodes) == 5 and bigger.links[-1].mtu == 9000
    assert bigger.vars["n"] == 5


def test_undefined_variable_is_an_error() -> None:
    message = error_of("name: t\nnodes:\n  {{ who }}: {}\n")
    assert "'who' is undefined" in message
    assert "--var" in message


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}",
        "{{ self._TemplateReference__context }}",
    ],
)
def test_templates_cannot_reach_python_or_files(template: str) -> None:
    with pytest.raises(TopologyError):
        load_text(f"name: t\nvars: {{}}\nnodes: {{h1: {{}}}}\n# {template}\n", "yaml", "evil.yaml")


def test_toml_and_json(tmp_path) -> None:
    toml = tmp_path / "lab.toml"
    toml.write_text(
        'name = "t"\n[vars]\naddr = "198.18.1.1/24"\n[nodes.h1.interfaces.eth0]\nipv4 = ["{{ addr }}"]\n'
        '[nodes.h2.interfaces.eth0]\nipv4 = ["198.18.1.2/24"]\n[[links]]\nendpoints = ["h1:eth0", "h2:eth0"]\n'
    )
    assert str(load_file(toml).nodes["h1"].interfaces["eth0"].ipv4[0]) == "198.18.1.1/24"
    js = tmp_path / "lab.json"
    js.write_text(
        json.dumps(
            {"name": "t", "nodes": {"h1": {}, "h2": {}}, "links": [{"endpoints": ["h1:e", "h9:e"]}]}, indent=1
        )
    )
    with pytest.raises(TopologyError, match=r"lab.json:\d+: links\[0\].endpoints\[1\]: node 'h9'"):
        load_file(js)
    bad = tmp_path / "lab.toml"
    bad.write_text("name = \n")
    with pytest.raises(TopologyError, match=r"lab\.toml"):
        load_file(bad)


def test_file_errors(tmp_path) -> None:
    with pytest.raises(TopologyError, match="no such file"):
        load_file(tmp_path / "missing.yaml")
    other = tmp_path / "lab.txt"
    other.write_text("")
    with pytest.raises(TopologyError, match="unknown extension"):
        load_file(other)
    with pytest.raises(TopologyError, match="top level must be a mapping"):
        load_text("- a\n- b\n", "yaml")


def test_schema_describes_every_part() -> None:
    schema = Topology.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    assert {"Node", "Link", "Endpoint", "Route", "InterfaceSettings", "OffloadFeatures"} <= set(defs)
    assert "tx-checksum" in defs["OffloadFeatures"]["properties"]
    link_models = [defs[ref["$ref"].split("/")[-1]] for ref in defs["Link"]["oneOf"]]
    assert {m["properties"]["type"]["const"] for m in link_models} == {
        "veth",
        "bridge",
        "vxlan",
        "tun-pair",
        "wire",
    }
    vxlan = next(m for m in link_models if m["properties"]["type"]["const"] == "vxlan")
    assert "vni" in vxlan["properties"]  # a type's own fields are in its own model
    with_vni = {m["properties"]["type"]["const"] for m in link_models if "vni" in m["properties"]}
    assert with_vni == {"vxlan", "wire"}  # a wire over kernel vxlan has one too
