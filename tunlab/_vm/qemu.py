"""Run a guest under qemu: its argv, accelerator detection, QMP, start and stop.

qemu gets every channel as an inherited fd — TAP devices, the QMP monitor and the agent's
port on socketpairs — so nothing is left on disk but the console log. It is started from the
process's long-lived spawner thread with PR_SET_PDEATHSIG (via setpriv), so it dies with its
holder even after SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab._linux import cgroups
from tunlab._linux.spawn import spawn
from tunlab.errors import LabError

QEMU = "qemu-system-x86_64"


@dataclass
class Nic:
    """A guest NIC: the TAP fds qemu takes (one per queue) and the MAC the guest sees."""

    fds: list[int]
    mac: str


@dataclass
class Share:
    host: str
    tag: str
    readonly: bool = True


@dataclass
class Guest:
    """Everything qemu needs to boot one node."""

    name: str  # -name and the process title: tl-<lab id>-<node>
    kernel: Path
    initrd: Path | None
    append: str
    memory: int = 256
    cpus: int = 1
    accel: str = "tcg"
    root_image: Path | None = None  # ext4 on virtio-blk, read-only (an overlay in the guest)
    shares: list[Share] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    console: Path | None = None
    log: Path | None = None  # qemu's own stderr (warnings, a refused option)
    extra: list[str] = field(default_factory=list)

    def argv(self, qmp_fd: int, agent_fd: int) -> list[str]:
        cpu = ["-cpu", "max"] if self.accel == "tcg" else ["-cpu", "host"]
        out = [
            QEMU, "-name", self.name, "-machine", "q35", "-accel", self.accel, *cpu,
            "-m", str(self.memory), "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel), "-append", self.append,
            "-chardev", f"socket,id=qmp,fd={qmp_fd}", "-mon", "chardev=qmp,mode=control",
            "-device", "virtio-serial-pci,id=vser",
            "-chardev", f"socket,id=agent,fd={agent_fd}",
            "-device", "virtserialport,chardev=agent,name=org.tunlab.agent",
            "-device", "virtio-rng-pci",
        ]  # fmt: skip
        if self.initrd is not None:
            out += ["-initrd", str(self.initrd)]
        if self.console is not None:
            out += ["-chardev", f"file,id=con,path={self.console}", "-serial", "chardev:con"]
        if self.root_image is not None:
            out += ["-drive", f"file={self.root_image},if=virtio,format=raw,readonly=on"]
        for i, share in enumerate(self.shares):
            ro = ",readonly=on" if share.readonly else ""
            out += ["-fsdev", f"local,id=fs{i},path={share.host},security_model=none{ro}",
                    "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]  # fmt: skip
        for i, nic in enumerate(self.nics):
            if len(nic.fds) == 1:
                out += ["-netdev", f"tap,id=n{i},fd={nic.fds[0]}"]
                dev = f"virtio-net-pci,netdev=n{i},mac={nic.mac},romfile="
            else:
                out += ["-netdev", f"tap,id=n{i},fds={':'.join(map(str, nic.fds))}"]
                dev = (
                    f"virtio-net-pci,netdev=n{i},mac={nic.mac},romfile=,mq=on,vectors={2 * len(nic.fds) + 2}"
                )
            out += ["-device", dev]
        return out + self.extra


class Qmp:
    """The QMP monitor on the host end of a socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self._buf = b""
        self._greeted = False

    def _message(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise LabError("qemu closed its monitor")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        data = json.loads(line)
        return data if isinstance(data, dict) else {}

    def command(self, name: str, **arguments: Any) -> Any:
        if not self._greeted:
            self._message()  # {"QMP": ...}
            self._greeted = True
            self.command("qmp_capabilities")
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._message()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise LabError(f"qemu {name}: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        self.sock.close()


class Process:
    """A started qemu: its Popen, monitor and the host end of the agent's port."""

    def __init__(self, guest: Guest, env: dict[str, str] | None = None, group: Path | None = None) -> None:
        """group: the node's cgroup, which qemu is born in (its teardown ends it with the node)."""
        require_qemu()
        qmp_host, qmp_guest = socket.socketpair()
        agent_host, agent_guest = socket.socketpair()
        fds = [qmp_guest.fileno(), agent_guest.fileno(), *(fd for n in guest.nics for fd in n.fds)]
        procs_fd = cgroups.open_procs(group) if group is not None else None
        if procs_fd is not None:
            fds.append(procs_fd)
        for fd in fds:
            os.set_inheritable(fd, True)
        argv = ["setpriv", "--pdeathsig", "KILL", "--", *guest.argv(qmp_guest.fileno(), agent_guest.fileno())]
        if procs_fd is not None:
            argv = cgroups.join_argv(procs_fd, argv)
        log = open(guest.log, "wb") if guest.log is not None else None  # noqa: SIM115 - closed below
        try:
            self.popen = spawn(
                argv,
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log if log is not None else subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        finally:
            qmp_guest.close()
            agent_guest.close()
            if log is not None:
                log.close()
            if procs_fd is not None:
                os.close(procs_fd)
        self.guest = guest
        self.qmp = Qmp(qmp_host)
        self.agent_sock = agent_host

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self) -> str:
        """qemu's last words (from its log file)."""
        if self.guest.log is None:
            return ""
        try:
            text = self.guest.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])

    def stop(self, timeout: float = 5.0) -> None:
        """QMP quit, then SIGKILL if qemu is still there after timeout."""
        if self.alive():
            with contextlib.suppress(Exception):
                self.qmp.command("quit")
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        else:
            self.popen.wait()
        self.qmp.close()
        with contextlib.suppress(OSError):
            self.agent_sock.close()


def require_qemu() -> None:
    missing = [t for t in (QEMU, "setpriv") if shutil.which(t) is None]
    if missing:
        raise LabError(
            f"VM nodes need {' and '.join(missing)} (apt-get install qemu-system-x86 util-linux; "
            "`tunlab doctor` lists what this machine lacks)"
        )


_ACCEL: tuple[str, str] | None = None
PROBE_CACHE = Path("/run/tunlab/accel.json")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def detect_accel(kernel: Path, initrd: Path, timeout: float = 4.0) -> tuple[str, str]:
    """(accelerator, why): KVM only if a guest really boots with it here, else TCG.

    /dev/kvm existing is not enough (nested or paravirtual hosts abort or hang at the first
    instruction): a probe guest boots with KVM and powers off at once. The answer is kept for
    this boot of the machine (/run/tunlab/accel.json), so it is probed once."""
    global _ACCEL
    if _ACCEL is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            cached = json.loads(PROBE_CACHE.read_text())
            if cached["boot_id"] == _boot_id():
                _ACCEL = (str(cached["accel"]), f"{cached['reason']} (probed once this boot)")
    if _ACCEL is None:
        _ACCEL = _probe(kernel, initrd, timeout)
        with contextlib.suppress(OSError):
            PROBE_CACHE.parent.mkdir(parents=True, exist_ok=True)
            PROBE_CACHE.write_text(
                json.dumps({"boot_id": _boot_id(), "accel": _ACCEL[0], "reason": _ACCEL[1]})
            )
    return _ACCEL


def _probe(kernel: Path, initrd: Path, timeout: float) -> tuple[str, str]:
    if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    argv = [QEMU, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "128", "-nodefaults",
            "-display", "none", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "tunlab.probe=1 panic=-1 quiet"]  # fmt: skip
    start = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "tcg", f"a KVM probe guest did not finish within {timeout:.0f} s (KVM unusable here)"
    if done.returncode == 0 and time.monotonic() - start < timeout:
        return "kvm", "a KVM probe guest booted"
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
    return "tcg", f"KVM refused a probe guest ({tail[0]})"
