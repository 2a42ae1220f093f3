"""Nodes own their processes and files: whatever is started in a node — a background job, a
setsid, a double fork, a process that ignores SIGTERM, one holding a TUN device and a socket —
ends with the lab (down, leaving `with`, the rollback of a failed up, SIGKILL of the holder
followed by gc); each node has its own /run, /tmp, /sys, hostname and /etc/hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import node_python, unique_name
from tunlab._linux import cgroups
from tunlab.errors import DeployError
from tunlab.topologies import Lab, garbage_collect, load_text

pytestmark = pytest.mark.root

LAB = """
name: procs
nodes:
  alpha: {}
  beta: {}
links:
  - endpoints:
      - {node: alpha, interface: eth0, ipv4: 198.18.90.1/24, ipv6: 2001:db8:90::1/64}
      - {node: beta, interface: eth0, ipv4: 198.18.90.2/24, ipv6: 2001:db8:90::2/64}
"""
TUN_HOLDER = textwrap.dedent(
    """
    import fcntl, os, socket, struct, time
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"held0", 0x0001 | 0x1000))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    time.sleep(1000)
    """
)
# every way a process can try to get away from the one that started it
SHAPES = {
    "background": ["sh", "-c", "sleep 1001 >/dev/null 2>&1 &"],
    "setsid": ["setsid", "-f", "sleep", "1002"],
    "double fork": ["sh", "-c", "(sleep 1003 >/dev/null 2>&1 &) &"],
    "ignores SIGTERM": ["sh", "-c", "trap '' TERM; exec sleep 1004 >/dev/null 2>&1 </dev/null &"],
    "holds a TUN device and a socket": [node_python(), "-c", TUN_HOLDER],
}


def lab() -> Lab:
    return Lab(load_text(LAB, "yaml"), unique=True)


def start_everything(running: Lab) -> set[int]:
    """Every leak shape in both nodes; the network namespaces they live in."""
    for name in ("alpha", "beta"):
        node = running.node(name)
        for argv in SHAPES.values():
            node.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(0.5)  # the daemons have forked away by now
    inodes = {running.node(n).netns.inode[1] for n in ("alpha", "beta")}
    assert len(survivors(inodes)) >= 2 * len(SHAPES), "the processes did not start"
    return inodes


def survivors(inodes: set[int]) -> list[str]:
    """Live (not zombie) processes whose network namespace is one of these."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino not in inodes:
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z":
            out.append(f"{entry} {argv}")
    return out


def assert_nothing_left(lab_id: str, inodes: set[int]) -> None:
    left = survivors(inodes)
    assert not left, f"processes outlived the lab: {left}"
    group = cgroups.lab_group(lab_id)
    assert group is None or not group.exists(), f"cgroup {group} is still there"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if f"/nodes/{lab_id}" in line]
    assert not mounts, f"mounts left: {mounts}"


def test_nothing_started_in_a_node_survives_down() -> None:
    running = lab().up()
    inodes = start_everything(running)
    assert running.down() == []
    assert_nothing_left(running.id, inodes)


def test_nothing_started_in_a_node_survives_leaving_with() -> None:
    with lab() as running:
        inodes = start_everything(running)
        lab_id = running.id
    assert_nothing_left(lab_id, inodes)


def test_nothing_started_by_a_failed_up_survives_its_rollback() -> None:
    bad = LAB.replace(
        "  alpha: {}",
        "  alpha:\n    exec: [[sh, -c, 'sleep 1005 >/dev/null 2>&1 &'], [setsid, -f, sleep, '1006']]\n"
        "    healthcheck: {file: /run/never, timeout: 0.5}",
    )
    failing = Lab(load_text(bad, "yaml"), unique=True)
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    with pytest.raises(DeployError):
        failing.up()
    new = [p for p in os.listdir("/proc") if p.isdigit() and p not in before]
    cmdlines = []
    for pid in new:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines.append(f.read())
        except OSError:
            pass
    assert not [c for c in cmdlines if b"1005" in c or b"1006" in c], "a rolled-back node's process lives"
    assert_nothing_left(failing.id, set())


def test_nothing_survives_sigkill_of_the_holder_and_gc(tmp_path: Path) -> None:
    name = unique_name("pk")
    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys, time
            from tunlab.topologies import Lab, load_text
            lab = Lab(load_text({LAB!r}, "yaml"), name={name!r}).up()
            shapes = {list(SHAPES.values())!r}
            for node in ("alpha", "beta"):
                for argv in shapes:
                    lab.node(node).popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            print(lab.id, lab.node("alpha").netns.inode[1], lab.node("beta").netns.inode[1], flush=True)
            time.sleep(1000)
            """
        )
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    lab_id, *raw = holder.stdout.readline().split()
    inodes = {int(i) for i in raw}
    time.sleep(0.5)
    try:
        assert len(survivors(inodes)) >= 2 * len(SHAPES)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # whatever happened: the lab is then gc's
        holder.wait()
    removed = garbage_collect()
    assert any(name in line for line in removed), removed
    assert_nothing_left(lab_id, inodes)


def test_two_nodes_run_the_same_daemon_with_the_same_socket_path() -> None:
    daemon = textwrap.dedent(
        """
        import os, socket, sys, time
        os.makedirs("/run/daemon", exist_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind("/run/daemon/control.sock")  # EADDRINUSE if another node's daemon had it
        s.listen()
        with open("/run/daemon/pid", "w") as f:
            f.write(str(os.getpid()))
        print("listening", flush=True)
        c, _ = s.accept()
        c.sendall(socket.gethostname().encode())
        """
    )
    ask = "import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/daemon/control.sock'); print(s.recv(64).decode())"
    with lab() as running:
        procs = []
        for name in ("alpha", "beta"):
            proc = running.node(name).popen([node_python(), "-c", daemon], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
            procs.append(proc)
        for name in ("alpha", "beta"):  # each reaches its own node's daemon
            assert running.node(name).run([node_python(), "-c", ask]).text.strip() == name
        for proc in procs:
            proc.wait(5)
    assert not os.path.exists("/run/daemon"), "a node's /run reached the host"


def test_a_node_has_its_own_names_run_tmp_and_sys() -> None:
    with lab() as running:
        alpha, beta = running.node("alpha"), running.node("beta")
        assert alpha.run(["hostname"]).text.strip() == "alpha"
        assert beta.run(["hostname"]).text.strip() == "beta"
        assert "198.18.90.2" in alpha.run(["getent", "ahostsv4", "beta"]).text
        assert "2001:db8:90::2" in alpha.run(["getent", "ahostsv6", "beta"]).text
        assert alpha.run(["getent", "hosts", "alpha"]).text.startswith("127.0.1.1")
        assert alpha.run(["ping", "-c1", "-W2", "beta"]).ok  # the name resolves and answers
        assert sorted(alpha.run(["ls", "/sys/class/net"]).text.split()) == ["eth0", "lo"]
        mtu = alpha.run(["cat", "/sys/class/net/eth0/mtu"]).text.strip()
        assert mtu == "1500"
        assert alpha.run(["sh", "-c", "echo x > /tmp/only-alpha && echo y > /run/only-alpha"]).ok
        assert not beta.run(["test", "-e", "/tmp/only-alpha"]).ok
        assert not beta.run(["test", "-e", "/run/only-alpha"]).ok
        assert not os.path.exists("/tmp/only-alpha") and not os.path.exists("/run/only-alpha")
        before = {p.pid for p in alpha.processes()}
        sleeper = alpha.popen(["sleep", "30"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until it has exec'd (its command line is set)
            new = [p for p in alpha.processes() if p.pid not in before]
            if [p.command for p in new] == ["sleep 30"]:
                break
            time.sleep(0.02)
        assert [(p.pid, p.command) for p in new] == [(sleeper.pid, "sleep 30")]


def test_files_are_placed_and_shared_files_opt_out(tmp_path: Path) -> None:
    host_file = tmp_path / "settings.conf"
    host_file.write_text("from the host\n")
    topo = LAB.replace(
        "  alpha: {}",
        "  alpha:\n"
        "    private_dirs: [/run/extra]\n"
        "    files:\n"
        '      - {path: /run/app/app.conf, content: "listen 1\\n"}\n'
        f"      - {{path: /run/extra/settings.conf, host: {host_file}}}\n",
    ).replace("  beta: {}", "  beta: {files: shared}")
    with Lab(load_text(topo, "yaml"), unique=True) as running:
        alpha, beta = running.node("alpha"), running.node("beta")
        assert alpha.run(["cat", "/run/app/app.conf"]).text == "listen 1\n"
        assert alpha.run(["cat", "/run/extra/settings.conf"]).text == "from the host\n"
        assert not alpha.run(["sh", "-c", "echo no > /run/extra/settings.conf"]).ok  # read-only
        assert beta.run(["hostname"]).text.strip() == "beta"  # its own name all the same
        assert beta.run(["test", "-d", "/run/netns"]).ok  # the host's /run
    assert host_file.read_text() == "from the host\n"


def test_validate_refuses_files_tunlab_would_have_to_create_on_the_host() -> None:
    from tunlab.errors import TopologyError

    topo = LAB.replace(
        "  alpha: {}",
        "  alpha:\n    private_dirs: [/no/such/dir]\n    files: [{path: /etc/no-such-file.conf, content: x}]",
    )
    with pytest.raises(TopologyError) as info:
        load_text(topo, "yaml")
    assert "nodes.alpha.private_dirs[0]: /no/such/dir does not exist" in str(info.value)
    assert "nodes.alpha.files[0].path: /etc/no-such-file.conf does not exist on the host" in str(info.value)


def test_tunlab_ps_lists_each_nodes_processes() -> None:
    with lab() as running:
        running.node("beta").popen(["sleep", "1234"])
        done = subprocess.run(
            [sys.executable, "-m", "tunlab._cli.main", "ps", running.name, "beta"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "sleep 1234" in done.stdout and "beta" in done.stdout


def test_a_nodes_cgroup_and_namespaces_are_made_once_by_its_first_process() -> None:
    """Nothing until a process starts; then one set, whichever process starts it (here four
    `tunlab exec` at once, then the holder) — the flock on the node's hold directory."""
    with lab() as running:
        alpha = running.node("alpha")
        assert alpha.group is not None and not alpha.group.exists()
        assert alpha.spaces is not None and not alpha.spaces.made()
        argv = [sys.executable, "-m", "tunlab._cli.main", "exec", running.name, "alpha", "--"]
        execs = [
            subprocess.Popen(
                [*argv, "readlink", "/proc/self/ns/mnt", "/proc/self/ns/uts"], stdout=subprocess.PIPE
            )
            for _ in range(4)
        ]
        seen = {proc.communicate(timeout=60)[0] for proc in execs}
        assert all(proc.returncode == 0 for proc in execs)
        assert alpha.spaces.made() and alpha.group.exists()
        mine = alpha.run(["readlink", "/proc/self/ns/mnt", "/proc/self/ns/uts"]).stdout
        assert seen == {mine}, f"more than one set of namespaces: {seen | {mine}}"
        host = os.readlink("/proc/self/ns/mnt").encode()
        assert host not in mine
        beta = running.node("beta")
        assert beta.spaces is not None and not beta.spaces.made(), "beta ran nothing"
