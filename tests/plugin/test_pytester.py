"""The plugin in a pytest sub-session: fixtures, markers, failures with diagnostics, skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunlab.topologies._state import all_labs, owned_namespaces

pytestmark = pytest.mark.root
DEMO = (Path(__file__).resolve().parents[2] / "examples" / "demo.yaml").read_text()


@pytest.fixture
def lab_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", demo=DEMO)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def test_tun_device_marker_and_peer(pytester: pytest.Pytester, needs_root) -> None:
    pytester.makepyfile(
        """
        import pytest
        from tunlab import Layer, packets

        @pytest.mark.tun_device(ipv4="198.18.77.1/24", mtu=1400)
        def test_ping_answered(tun_device):
            dev, peer = tun_device.device, tun_device.peer
            assert dev.mtu == 1400
            proc = peer.popen(["ping", "-c1", "-W5", "198.18.77.2"])
            while (reply := packets.echo_reply(dev.recv())) is None:
                pass
            dev.send(reply)
            assert proc.wait(10) == 0

        @pytest.mark.parametrize("tun_device", [{"layer": Layer.L2, "ipv4": "198.18.78.1/24"},
                                                {"offload": True}], indirect=True, ids=["tap", "offload"])
        def test_indirect(tun_device):
            assert tun_device.device.layer is tun_device.options["layer"]
            assert tun_device.device.tcp_gso is tun_device.options["offload"]

        def test_async(async_tun_device):
            import asyncio
            async def main():
                return await async_tun_device.device.mtu()
            assert asyncio.run(main()) == 1500
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_indirect?tap?*PASSED*", "*test_indirect?offload?*PASSED*"])


def test_topology_lab_factory_and_netns(lab_dir: pytest.Pytester, needs_root) -> None:
    lab_dir.makepyfile(
        """
        import pytest
        from tunlab.testing import assert_reachable, assert_unreachable

        @pytest.mark.topology("demo.yaml")
        def test_lab(topology):
            assert_reachable(topology.node("h1"), "198.18.2.2")
            assert_unreachable(topology.node("h1"), "198.18.9.9")

        def test_two_labs(lab_factory):
            a, b = lab_factory("demo.yaml"), lab_factory("demo.yaml", mtu=1400)
            assert a.id != b.id
            assert b.topology.vars["mtu"] == 1400

        def test_bare(netns):
            assert netns.run(["ip", "link"]).returncode == 0
        """
    )
    result = run(lab_dir)
    result.assert_outcomes(passed=3)


def test_failure_report_has_diagnostics(lab_dir: pytest.Pytester, needs_root) -> None:
    lab_dir.makepyfile(
        """
        import pytest
        from tunlab.testing import assert_reachable

        @pytest.mark.topology("demo.yaml")
        def test_fails(topology, capture):
            with capture(topology, "r1", "tun0"):
                topology.node("h1").run(["ping", "-c1", "198.18.2.2"])
            assert_reachable(topology.node("h1"), "198.18.2.99", count=1)
        """
    )
    result = run(lab_dir)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "198.18.2.99 is not reachable from h1: 0/1 echo replies" in out
    assert "tunlab: lab demo-" in out  # a report section per lab
    assert "route default via 198.18.1.1" in out  # routes of the nodes involved
    assert "tun0 tun up mtu 1500 198.18.2.1/24" in out  # links and addresses
    assert "tunlab: packet captures" in out and ".pcap" in out  # where the pcap is
    assert "r1:tun0 <-> h2:tun0 a_to_b: " in out and " frames in, " in out  # relay counters, readable
    assert '"frames_in"' not in out  # not a raw JSON line


def test_keep_on_failure_leaves_the_lab_and_says_how_to_enter(lab_dir: pytest.Pytester, needs_root) -> None:
    lab_dir.makepyfile(
        """
        import pytest

        @pytest.mark.topology("demo.yaml")
        def test_fails(topology):
            assert False, "look at the lab"
        """
    )
    result = run(lab_dir, "--tunlab-keep-on-failure")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "tunlab: kept lab 'demo-" in out and "held by supervisor pid" in out
    assert "tunlab exec demo-" in out
    name = out.split("kept lab '")[1].split("'")[0]
    kept = [s for s in all_labs() if s.name == name]
    assert kept and kept[0].owner_alive  # a supervisor holds it now, whatever pytest does

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tunlab._cli.main", *argv], capture_output=True, text=True, timeout=60
        )

    try:
        # the printed commands work: across the tun-pair, whose relay now runs in the supervisor
        crossed = cli("exec", name, "h1", "--", "ping", "-c1", "-W2", "198.18.2.2")
        assert crossed.returncode == 0, crossed
        assert "tun0" in cli("inspect", name).stdout
        assert cli("impair", name, "h2:tun0", "delay=5ms").returncode == 0
    finally:
        done = cli("down", name)
    assert done.returncode == 0, done
    assert not owned_namespaces(kept[0].id)
    assert name not in {s.name for s in all_labs()}


def test_offload_matrix_ids_skips_and_restores(lab_dir: pytest.Pytester, needs_root) -> None:
    lab_dir.makepyfile(
        """
        import pytest
        from tunlab._linux import ethtool

        pytestmark = pytest.mark.topology("demo.yaml")

        def test_default_matrix(topology, offload_matrix):
            offload_matrix.apply(topology, "h1:eth0")
            now = ethtool.read_features(topology.node("h1").netns, "eth0")
            for key, on in offload_matrix.features.items():
                assert now[key] == on, (key, now)

        @pytest.mark.offload_matrix({"gro": True}, "all-off")
        def test_chosen(topology, offload_matrix):
            offload_matrix.apply(topology, "h1:eth0")

        @pytest.mark.offload_matrix({"tso": True})
        def test_fixed_feature_skips(tun_device, offload_matrix):
            offload_matrix.apply(tun_device)  # only TUNSETOFFLOAD turns TSO on for a TUN
        """
    )
    result = run(lab_dir, "-v", "-rs")
    result.stdout.fnmatch_lines(
        [
            "*test_default_matrix?all-on?*PASSED*",
            "*test_default_matrix?gro-off?*PASSED*",
            "*test_default_matrix?gso+tso-off?*PASSED*",
            "*test_default_matrix?tso+tx-checksum-off?*PASSED*",
            "*test_default_matrix?all-off?*PASSED*",
            "*test_chosen?gro-on?*PASSED*",
            "*test_chosen?all-off?*PASSED*",
            "*SKIPPED*offload combination tso-on*",
        ]
    )


def test_skips_with_the_reason_without_cap_net_admin(pytester: pytest.Pytester, needs_root) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    pytester.makepyfile(
        """
        def test_device(tun_device):
            raise AssertionError("must not run")

        def test_lab(netns):
            raise AssertionError("must not run")
        """
    )
    argv = [
        "setpriv",
        "--bounding-set=-net_admin,-sys_admin",
        "--inh-caps=-net_admin,-sys_admin",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-rs",
        str(pytester.path),
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pytester.path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert "2 skipped" in done.stdout, done.stdout + done.stderr
    assert "tunlab fixtures need CAP_NET_ADMIN: run the tests as root" in done.stdout


def test_xdist_workers_do_not_collide(lab_dir: pytest.Pytester, needs_root) -> None:
    pytest.importorskip("xdist")
    lab_dir.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.parametrize("i", range(4))
            @pytest.mark.topology("demo.yaml")
            def test_many(topology, i):
                assert topology.node("h1").run(["ping", "-c1", "-W2", "198.18.2.2"]).code == 0

            @pytest.mark.parametrize("i", range(4))
            def test_devices(tun_device, i):
                assert tun_device.device.name
            """
        )
    )
    result = run(lab_dir, "-n", "2")
    result.assert_outcomes(passed=8)


def test_usage_errors_are_explained(pytester: pytest.Pytester, needs_root) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tun_device(speed=10)
        def test_bad_option(tun_device):
            pass

        def test_no_marker(topology):
            pass
        """
    )
    result = run(pytester)
    out = result.stdout.str()
    assert "tun_device: unknown options ['speed']" in out
    assert "the topology fixture needs @pytest.mark.topology('lab.yaml')" in out


def test_module_scope_shares_one_lab_and_defaults_are_overridable(
    lab_dir: pytest.Pytester, needs_root
) -> None:
    lab_dir.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def tunlab_tun_defaults():
            return {"layer": "tun", "offload": False, "mtu": 1280, "ipv4": "198.18.90.1/24", "ipv6": None,
                    "multi_queue": False, "packet_information": False, "name": "mytun"}
        """
    )
    lab_dir.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.topology("demo.yaml")
        seen = []

        def test_one(topology):
            seen.append(topology.id)

        def test_two(topology):
            seen.append(topology.id)
            assert seen[0] == seen[1], "module scope: one lab for the whole module"

        def test_defaults(tun_device):
            assert tun_device.device.name == "mytun"
            assert tun_device.device.mtu == 1280
            assert "198.18.90.1/24" in {str(a) for a in tun_device.device.addresses()}
        """
    )
    result = run(lab_dir, "--tunlab-scope=module")
    result.assert_outcomes(passed=3)


def test_a_lab_that_degrades_during_a_test_fails_it(lab_dir: pytest.Pytester, needs_root) -> None:
    lab_dir.makepyfile(
        """
        import os, signal, time
        import pytest

        @pytest.mark.topology("demo.yaml")
        def test_kills_a_relay_worker(topology):
            os.kill(topology._state.relay_pids[0], signal.SIGKILL)
            time.sleep(0.5)  # nothing the test asserts notices

        @pytest.mark.topology("demo.yaml")
        def test_leaves_it_alone(topology):
            assert topology.health() == {}
        """
    )
    result = run(lab_dir, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lab 'demo-*' degraded during the test: link * was killed by SIGKILL*"])
