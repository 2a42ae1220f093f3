"""A real userspace VPN in a lab: wireguard-go in two nodes, each with its default socket path,
peers named by node name, a tunnel across an impaired link — and nothing left after the test.

Needs wireguard-go and wg (Debian: wireguard-go, wireguard-tools; `make test` installs them).
"""

from __future__ import annotations

import shutil

import pytest

from tunlab import traffic
from tunlab.testing import assert_reachable, assert_rtt

TUNNEL = {"alpha": "198.19.60.1", "beta": "198.19.60.2"}  # inside 198.18.0.0/15


@pytest.fixture
def wireguard(topology):
    """wireguard-go wg0 up in both nodes, keyed and peered (endpoint: the other node's name)."""
    for tool in ("wireguard-go", "wg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: wireguard-go, wireguard-tools)")
    keys = {}
    for name in TUNNEL:
        node = topology.node(name)
        private = node.run(["wg", "genkey"]).text.strip()
        keys[name] = (private, node.run(["wg", "pubkey"], input=private.encode()).text.strip())
        started = node.run(["wireguard-go", "wg0"])  # daemonizes; its socket: /var/run/wireguard/wg0.sock
        assert started.ok, started.stderr
    for name, peer in (("alpha", "beta"), ("beta", "alpha")):
        node = topology.node(name)
        assert node.run(["sh", "-c", "umask 077 && cat > /run/wg.key"], input=keys[name][0].encode()).ok
        for argv in (
            ["wg", "set", "wg0", "listen-port", "51820", "private-key", "/run/wg.key",
             "peer", keys[peer][1], "endpoint", f"{peer}:51820", "allowed-ips", f"{TUNNEL[peer]}/32"],
            ["ip", "addr", "add", f"{TUNNEL[name]}/24", "dev", "wg0"],
            ["ip", "link", "set", "wg0", "up"],
        ):  # fmt: skip
            done = node.run(argv)
            assert done.ok, f"{name}: {' '.join(argv)}: {done.stderr.decode()}"
    return topology


@pytest.mark.topology("wireguard.yaml")
def test_two_wireguard_go_daemons_make_a_tunnel(wireguard) -> None:
    alpha, beta = wireguard.node("alpha"), wireguard.node("beta")
    for node in (alpha, beta):  # the same path in both nodes: each node's own /run
        assert node.run(["test", "-S", "/var/run/wireguard/wg0.sock"]).ok
    assert_reachable(alpha, TUNNEL["beta"], count=3)
    assert_rtt(traffic.ping(alpha, TUNNEL["beta"], count=5, interval=0.1), 10.0, rel=0.5)
    assert "latest handshake" in alpha.run(["wg", "show", "wg0"]).text
    assert [p.command for p in alpha.processes()] == ["wireguard-go wg0"]
