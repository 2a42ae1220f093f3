"""`tunlab doctor`: what this machine can do for tunlab and how to get what it lacks — TUN,
namespaces, root, cgroup v2, the kernel's netem/tbf, qemu and KVM, docker, the tools traffic
helpers run, the compiled core. Every check looks, none changes the machine (the qdisc probe
runs in a scratch namespace it removes)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import threading
from dataclasses import asdict, dataclass

import click
from rich.markup import escape
from rich.table import Table

from tunlab._cli.output import EXIT_FAILURE, console

LINUX = sys.platform.startswith("linux")
DEBIAN_HINT = "apt-get install"


@dataclass
class Check:
    """One finding: what was checked, ok or not, what was seen, and how to get it."""

    name: str
    ok: bool
    seen: str
    fix: str = ""
    needed: bool = False  # without it no lab comes up at all


def _tun() -> Check:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Check(
            "TUN/TAP (/dev/net/tun)", False, exc.strerror or str(exc), "modprobe tun (CONFIG_TUN)", True
        )
    os.close(fd)
    return Check("TUN/TAP (/dev/net/tun)", True, "opens", needed=True)


def _namespaces() -> Check:
    found: list[str] = []

    def look() -> None:
        from tunlab._linux.mounts import unshare
        from tunlab._linux.netns import CLONE_NEWNET

        try:
            unshare(CLONE_NEWNET, "network")  # this thread only: gone when it ends
            found.append("")
        except OSError as exc:
            found.append(exc.strerror or str(exc))

    thread = threading.Thread(target=look, name="tunlab-doctor-netns")
    thread.start()
    thread.join()
    error = found[0] if found else "?"
    if not error:
        return Check("network namespaces", True, "a thread made one", needed=True)
    return Check("network namespaces", False, error, "run as root (CAP_SYS_ADMIN); CONFIG_NET_NS", True)


def _root() -> Check:
    if os.geteuid() == 0:
        return Check("root", True, "euid 0", needed=True)
    return Check(
        "root", False, f"euid {os.geteuid()}", "labs need CAP_NET_ADMIN and CAP_SYS_ADMIN: sudo", True
    )


def _cgroup() -> Check:
    from tunlab._linux import cgroups

    where = cgroups.root()
    if where is not None:
        return Check("cgroup v2 (node processes)", True, str(where))
    return Check(
        "cgroup v2 (node processes)",
        False,
        "no writable cgroup2 mount",
        "mount -t cgroup2 none /sys/fs/cgroup/unified (daemons are then ended by a /proc sweep only)",
    )


def _qdiscs() -> list[Check]:
    from tunlab.topologies._impairments import kernel_qdiscs

    try:
        have = kernel_qdiscs()
    except Exception as exc:  # a probe that cannot run says why
        return [Check("tc netem / tbf", False, f"could not probe: {exc}", "run as root")]
    out = []
    for qdisc, module in (("netem", "sch_netem"), ("tbf", "sch_tbf")):
        ok = qdisc in have
        seen = "in this kernel" if ok else "not in this kernel: impairments run in tunlab's relay"
        out.append(Check(f"tc {qdisc} (kernel impairments)", ok, seen, "" if ok else f"modprobe {module}"))
    return out


def _qemu() -> list[Check]:
    from tunlab._vm.qemu import PROBE_CACHE, QEMU

    out = []
    path = shutil.which(QEMU)
    out.append(
        Check(
            "qemu (kind: vm)",
            path is not None,
            path or "not found",
            "" if path else f"{DEBIAN_HINT} qemu-system-x86 util-linux",
        )
    )
    try:
        cached = json.loads(PROBE_CACHE.read_text())
        accel = f"{cached['accel']} ({cached['reason']})"
    except (OSError, ValueError, KeyError):
        accel = ""
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        seen = accel or "/dev/kvm usable; the first VM boots a probe guest to be sure"
        out.append(
            Check(
                "KVM",
                not accel.startswith("tcg"),
                seen,
                "" if not accel.startswith("tcg") else "VMs run on TCG (slower)",
            )
        )
    else:
        out.append(
            Check(
                "KVM",
                False,
                "no usable /dev/kvm: VMs run on TCG (slower, still work)",
                "modprobe kvm_intel or kvm_amd",
            )
        )
    return out


def _docker() -> Check:
    if importlib.util.find_spec("docker") is None:
        return Check(
            "docker (kind: container)",
            False,
            "the docker SDK is not installed",
            "pip install 'tunlab[docker]'",
        )
    from tunlab.errors import LabError
    from tunlab.topologies._containers import docker_client

    try:
        client = docker_client(timeout=5)
        version = client.version().get("Version", "?")
    except LabError:
        return Check(
            "docker (kind: container)",
            False,
            "no engine answers",
            f"{DEBIAN_HINT} docker.io; systemctl start docker",
        )
    return Check("docker (kind: container)", True, f"engine {version}")


def _tools() -> list[Check]:
    wanted = [
        ("iperf3", "tunlab.traffic streams", "iperf3"),
        ("tshark", "reading captures in failure reports", "tshark"),
        ("debootstrap", "building tunlab/base and VM images", "debootstrap"),
        ("setpriv", "VM nodes", "util-linux"),
    ]
    out = []
    for tool, why, package in wanted:
        path = shutil.which(tool)
        out.append(
            Check(
                f"{tool} ({why})",
                path is not None,
                path or "not found",
                "" if path else f"{DEBIAN_HINT} {package}",
            )
        )
    return out


def _python() -> list[Check]:
    fast = importlib.util.find_spec("tunlab.devices.offload._fast") is not None
    numpy = importlib.util.find_spec("numpy") is not None
    trio = importlib.util.find_spec("trio") is not None
    dask = importlib.util.find_spec("distributed") is not None
    return [
        Check(
            "compiled offload core",
            fast,
            "built" if fast else "pure Python fallback",
            "" if fast else "reinstall with a C compiler (gcc)",
        ),
        Check(
            "numpy (tunlab[fast])",
            numpy,
            "installed" if numpy else "not installed",
            "" if numpy else "pip install 'tunlab[fast]'",
        ),
        Check(
            "trio (tunlab[trio])",
            trio,
            "installed" if trio else "not installed",
            "" if trio else "pip install 'tunlab[trio]'",
        ),
        Check(
            "Dask distributed (tunlab[cluster]: labs across hosts)",
            dask,
            "installed" if dask else "not installed",
            "" if dask else "pip install 'tunlab[cluster]'",
        ),
    ]


def run_checks() -> list[Check]:
    """Every check, in the order they are shown."""
    if not LINUX:
        return [
            Check("platform", True, f"{sys.platform}: devices only (labs need Linux namespaces)"),
            *_python(),
        ]
    checks = [_root(), _tun(), _namespaces(), _cgroup()]
    if os.geteuid() == 0:
        checks += _qdiscs()
    return checks + _qemu() + [_docker()] + _tools() + _python()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the findings as JSON")
def doctor(as_json: bool) -> None:
    """Check what this machine can do for tunlab and say how to get what it lacks."""
    checks = run_checks()
    if as_json:
        console.print_json(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("", "check", "found", "to get it"):
            table.add_column(column)
        for c in checks:
            mark = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.needed else "[yellow]no[/]")
            table.add_row(mark, escape(c.name), escape(c.seen), escape(c.fix))
        console.print(table)
        missing = [c.name for c in checks if c.needed and not c.ok]
        console.print(
            f"labs cannot come up here: {', '.join(missing)}" if missing else "labs can come up here"
        )
    if any(c.needed and not c.ok for c in checks):
        sys.exit(EXIT_FAILURE)
