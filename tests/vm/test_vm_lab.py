"""VM nodes under real qemu (TCG here): one lab of a host and two guests for most tests, started
once; crashes, timeouts and bad fields each with their own short lab."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunlab import traffic
from tunlab.errors import DeployError, LabError, TopologyError
from tunlab.testing import assert_gso_seen
from tunlab.testing._capture import Capture
from tunlab.topologies import Lab, load_text
from tunlab.topologies._drivers.vm import _qemu_pids
from tunlab.topologies._inspect import describe
from tunlab.topologies._state import LabState, owned_namespaces

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LAB = """
name: vmlab
nodes:
  h:
    interfaces:
      eth0: {ipv4: [198.18.130.1/24], ipv6: ["2001:db8:130::1/64"]}
      eth1: {ipv4: [198.18.131.1/24]}
      t0: {ipv4: [198.18.133.1/24]}
  v1:
    kind: vm
    routes: [{dst: 198.18.134.0/24, via: 198.18.132.2}]
    interfaces:
      eth0: {ipv4: [198.18.130.2/24], ipv6: ["2001:db8:130::2/64"], offload: true}
      eth1: {ipv4: [198.18.131.2/24], offload: false}
      eth2: {ipv4: [198.18.132.1/24]}
  v2:
    kind: vm
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces:
      eth0: {ipv4: [198.18.132.2/24], queues: 2}
      eth1: {ipv4: [198.18.133.2/24]}
links:
  - endpoints: ["h:eth0", "v1:eth0"]
  - endpoints: ["h:eth1", "v1:eth1"]
  - type: bridge
    endpoints: ["v1:eth2", "v2:eth0"]
  - type: tun-pair
    endpoints: ["h:t0", "v2:eth1"]
    impair: {delay: 5ms}
"""


def _needs_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu is not installed (make test installs qemu-system-x86)")


@pytest.fixture(scope="module")
def lab(needs_root: None) -> Iterator[Lab]:
    _needs_qemu()
    with Lab(load_text(LAB, "yaml"), unique=True) as running:
        yield running


def test_ping_both_ways_ipv4_and_ipv6(lab: Lab) -> None:
    h, v1 = lab.node("h"), lab.node("v1")
    assert traffic.ping(h, "198.18.130.2", count=2, interval=0.2).received == 2
    assert traffic.ping(h, "2001:db8:130::2", count=2, interval=0.2).received == 2
    back = v1.run(["ping", "-c", "2", "-W", "2", "198.18.130.1"], timeout=20)
    assert back.code == 0, back.stderr
    back6 = v1.run(["ping", "-c", "2", "-W", "2", "2001:db8:130::1"], timeout=20)
    assert back6.code == 0, back6.stderr


def test_exec_returns_code_and_output_binary_safe(lab: Lab) -> None:
    v1 = lab.node("v1")
    done = v1.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.code, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    blob = bytes(range(256)) * 64
    assert v1.run(["cat"], input=blob).stdout == blob
    assert v1.run(["sh", "-c", 'echo "$X"'], env={"X": "a b"}).stdout == b"a b\n"
    assert v1.run(["no-such-command"]).code == 127
    with pytest.raises(subprocess.TimeoutExpired):
        v1.run(["sleep", "30"], timeout=1)


def test_commands_run_concurrently(lab: Lab) -> None:
    v1 = lab.node("v1")
    start = time.monotonic()
    threads = [threading.Thread(target=v1.run, args=(["sleep", "2"],)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 6  # four 2 s sleeps at once, not one after another


def test_tcp_into_the_guest_is_byte_exact(lab: Lab) -> None:
    res = traffic.tcp_stream(lab.node("h"), lab.node("v1"), "198.18.130.2", nbytes=4 << 20)
    assert res.exact, res


def test_super_packets_cross_the_vm_boundary_with_offload_only(lab: Lab) -> None:
    """The guest sends a file with busybox httpd (writes far larger than one segment): with
    offload its virtio-net hands the host TAP TSO super-packets, without it only <= MTU frames.
    (busybox nc was the sender once: its 1 KiB writes make super-packets only when ACKs happen
    to lag, so the count depended on the machine's load.)"""
    h, v1 = lab.node("h"), lab.node("v1")
    size = 4 << 20
    setup = f"mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=65536 count={size >> 16} 2>/dev/null"
    assert v1.run(["sh", "-c", setup], timeout=60).code == 0
    try:
        for iface, guest, offload in (("eth0", "198.18.130.2", True), ("eth1", "198.18.131.2", False)):
            assert v1.run(["httpd", "-p", f"{guest}:8080", "-h", "/tmp/www"], timeout=20).code == 0
            got = 0
            with Capture(h.netns, iface, None) as cap, h.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
                c.settimeout(60)
                c.connect((guest, 8080))
                c.sendall(b"GET /big HTTP/1.0\r\n\r\n")
                while data := c.recv(1 << 20):
                    got += len(data)
            v1.run(["killall", "httpd"], timeout=20)
            assert got > size, got  # the file and the response header
            incoming = cap.incoming()
            if offload:
                assert_gso_seen(incoming, min_count=3, gso_type="tcpv4")
            else:
                assert not any(p.is_gso for p in incoming) and max(len(p) for p in incoming) <= 1514
    finally:
        v1.run(["sh", "-c", "killall httpd; rm -rf /tmp/www"], timeout=20)


def test_a_two_queue_nic_has_two_queues_in_the_guest(lab: Lab) -> None:
    out = lab.node("v2").run(["sh", "-c", "ls /sys/class/net/eth0/queues"]).stdout.decode().split()
    assert {"rx-0", "rx-1", "tx-0", "tx-1"} <= set(out)


def test_vm_to_vm_over_a_bridge_with_routes_and_sysctls_set_in_the_guests(lab: Lab) -> None:
    v1, v2 = lab.node("v1"), lab.node("v2")
    assert v1.run(["ping", "-c", "2", "-W", "2", "198.18.132.2"], timeout=20).code == 0
    assert b"198.18.134.0/24 via 198.18.132.2" in v1.run(["ip", "route"]).stdout
    assert v2.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == b"1"


def test_a_tun_pair_to_a_vm_carries_its_impairment(lab: Lab) -> None:
    res = traffic.ping(lab.node("h"), "198.18.133.2", count=4, interval=0.1)
    assert res.received >= 3 and min(res.rtt_ms[1:]) >= 10  # 5 ms each way through the relay


def test_inspect_and_state_know_the_guests(lab: Lab) -> None:
    state = LabState.load(lab.name)
    assert state is not None
    record = state.nodes["v1"]
    assert record["qemu_pid"] in _qemu_pids(f"tl-{lab.id}-v1")
    assert record["accel"] in ("kvm", "tcg")
    assert "booted in" in lab.node("v1").logs() and "as 'v1'" in lab.node("v1").logs()
    seen = lab.inspect()["nodes"]["v1"]
    assert seen["accel"].split()[0] in ("kvm", "tcg") and "(" in seen["accel"]  # and why
    guest = {i["name"]: i for i in seen["guest_interfaces"]}
    assert set(guest) == {"eth0", "eth1", "eth2"}, guest
    assert guest["eth0"]["addresses"] == ["198.18.130.2/24", "2001:db8:130::2/64"]
    assert guest["eth0"]["state"] == "up" and guest["eth0"]["rx_packets"] >= 0
    assert seen["console"].endswith("v1.console") and seen["console_tail"]
    host = {i["name"]: i for i in lab.inspect()["nodes"]["h"]["interfaces"]}
    assert host["eth0"]["kind"] == "tap"  # a VM's NIC is a TAP (the kernel's kind says "tun")
    text = "\n".join(describe(lab.inspect()))
    assert "accelerator " in text and "in the guest:" in text and "198.18.132.1/24" in text


# ---- each with its own lab ------------------------------------------------------------------------
SMALL = """
name: vmsmall
nodes:
  h: {interfaces: {eth0: {ipv4: [198.18.140.1/24]}}}
  g: {kind: vm, interfaces: {eth0: {ipv4: [198.18.140.2/24]}}}
links:
  - endpoints: ["h:eth0", "g:eth0"]
"""


def _leftovers(lab_id: str) -> list[str]:
    out = [f"qemu {p}" for p in _qemu_pids(f"tl-{lab_id}-")]
    out += [f"namespace {n}" for n in owned_namespaces(lab_id)]
    return out


def test_down_leaves_nothing(needs_root: None) -> None:
    _needs_qemu()
    lab = Lab(load_text(SMALL, "yaml"), unique=True).up()
    lab_id = lab.id
    assert _qemu_pids(f"tl-{lab_id}-g")
    assert lab.down() == []
    assert _leftovers(lab_id) == []


def test_a_guest_that_cannot_boot_fails_with_its_console(needs_root: None, tmp_path: Path) -> None:
    _needs_qemu()
    from tunlab._vm import images

    kernel = images.ensure("minimal").kernel
    empty = tmp_path / "empty.cpio"
    empty.write_bytes(b"")
    text = SMALL.replace("kind: vm,", f"kind: vm, kernel: {kernel}, initrd: {empty}, boot_timeout: 60,")
    lab = Lab(load_text(text, "yaml"), unique=True)
    with pytest.raises(DeployError) as info:
        lab.up()
    message = str(info.value)
    assert "did not boot" in message and ("panic" in message.lower() or "VFS" in message), message
    assert _leftovers(lab.id) == []


def _supervisor(name: str, file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunlab._cli.main", "up", str(file), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("when", ["during boot", "after boot"])
def test_sigkill_of_the_holder_then_gc_leaves_nothing(needs_root: None, tmp_path: Path, when: str) -> None:
    _needs_qemu()
    file = tmp_path / "lab.yaml"
    file.write_text(SMALL)
    name = f"vmkill{os.getpid()}{when[0]}"
    proc = _supervisor(name, file)
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        state = LabState.load(name)
        if state is not None:
            booted = state.status == "up"
            running = bool(_qemu_pids(f"tl-{state.id}-g"))
            if (when == "during boot" and running and not booted) or (when == "after boot" and booted):
                break
        time.sleep(0.05)
    assert state is not None, "the lab never registered"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _qemu_pids(f"tl-{state.id}-") and time.monotonic() < deadline:
        time.sleep(0.05)  # qemu dies with its holder (PR_SET_PDEATHSIG)
    assert not _qemu_pids(f"tl-{state.id}-"), "qemu outlived its holder"
    gc = subprocess.run([sys.executable, "-m", "tunlab._cli.main", "gc"], capture_output=True, text=True)
    assert gc.returncode == 0, gc.stderr
    assert _leftovers(state.id) == []
    assert LabState.load(name) is None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ("memory: 10", "nodes.g.memory"),
        ("image: nope", "no VM image recipe 'nope'"),
        ("shares: [/tmp]", "write host-dir:/guest/path"),
        ("accel: fast", "nodes.g.accel"),
        ("root: image", "root: image needs image: debian"),
        ("qemu_args: [-netdev, user]", "-netdev is set by tunlab"),
    ],
)
def test_bad_vm_fields_name_the_field(fields: str, words: str) -> None:
    text = SMALL.replace("kind: vm,", f"kind: vm, {fields},")
    with pytest.raises(TopologyError) as info:
        load_text(text, "yaml")
    assert words in str(info.value), str(info.value)


def test_the_example_boots(needs_root: None) -> None:
    _needs_qemu()
    with Lab.from_file(EXAMPLES / "vm.yaml", unique=True) as lab:
        assert traffic.ping(lab.node("host"), "198.18.120.2", count=1).received == 1


def test_the_debian_image_runs_the_roots_tools_over_a_tmpfs_overlay(needs_root: None) -> None:
    _needs_qemu()
    text = SMALL.replace("kind: vm,", "kind: vm, image: debian,")
    with Lab(load_text(text, "yaml"), unique=True) as lab:
        g = lab.node("g")
        # iproute2's ip (not busybox's applet), ethtool, python3: the root image's own tools
        assert b"198.18.140.2/24" in g.run(["ip", "-br", "addr", "show", "eth0"]).stdout
        features = g.run(["ethtool", "-k", "eth0"]).stdout.decode()
        assert "tcp-segmentation-offload: on" in features  # the TAP has the virtio-net header
        assert g.run(["python3", "-c", "print(6 * 7)"]).stdout == b"42\n"
        assert g.run(["sh", "-c", "echo x > /etc/tunlab-probe && cat /etc/tunlab-probe"]).stdout == b"x\n"
        report = traffic.iperf3(lab.node("h"), g, "198.18.140.2", seconds=2)
        assert report["end"]["sum_received"]["bits_per_second"] > 10e6


def test_a_lab_with_vms_is_not_handed_over_and_stays_as_it_was(lab: Lab) -> None:
    with pytest.raises(LabError, match="VM nodes"):
        lab.hand_over()
    assert lab.running and lab.node("h").run(["ping", "-c1", "-W2", "198.18.130.2"]).ok
