"""kind: vm — a qemu guest: its own kernel, virtio-net NICs on tunlab's TAP devices.

A VM node has a host-side namespace (tl-<lab id>-<node>) for the devices of its links that
are not someone else's interface; qemu is started by the lab's holder once the links exist
(it needs their TAP fds), reached over QMP and tunlab's guest agent on socketpairs, and
configured through the agent: interfaces renamed by MAC, addresses, routes and sysctls in one
script. Images come from vm-images/ (tunlab._vm.images).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field

from tunlab._linux import cgroups
from tunlab._linux.netns import NetNamespace
from tunlab._linux.spawn import how_it_ended
from tunlab.errors import LabError
from tunlab.topologies._drivers.base import (
    ExecResult,
    LabContext,
    NodeDriver,
    NodeHandle,
    NodeIssue,
    Resources,
)
from tunlab.topologies._drivers.netns import remove_namespace
from tunlab.topologies._fields import NodeBase, Strict
from tunlab.topologies._state import labs_dir, ns_name, process_start

if TYPE_CHECKING:
    from tunlab._vm.agent import Agent
    from tunlab._vm.qemu import Process
    from tunlab.devices._sync import SyncDevice


class VmFields(Strict):
    """kind: vm — a qemu guest wired with tunlab's TAP devices (docs/topologies.md, VM nodes)."""

    image: str | None = Field(None, description="a vm-images/ recipe: minimal (default) or debian")
    kernel_package: str | None = Field(None, description="pin the image's Debian kernel package")
    kernel: str | None = Field(None, description="your own kernel: a bzImage or vmlinux path")
    initrd: str | None = Field(None, description="with kernel: your initramfs (default: the image's)")
    root: Literal["initramfs", "image", "host"] | None = Field(
        None,
        description="initramfs, the image's ext4 root, or the host's / read-only over 9p (+ tmpfs overlay)",
    )
    root_image: str | None = Field(None, description="root: image with your own ext4 file")
    memory: int | None = Field(None, ge=64, le=1 << 20, description="MiB (default 256)")
    cpus: int | None = Field(None, ge=1, le=64)
    shares: list[str] = Field(default_factory=list, description="host-dir:guest-path[:ro|rw] over 9p")
    append: str | None = Field(None, description="more kernel command line")
    accel: Literal["auto", "kvm", "tcg"] | None = Field(None, description="auto: KVM only where it works")
    boot_timeout: float | None = Field(None, gt=0, le=3600, description="seconds (default 120)")
    qemu_args: list[str] = Field(default_factory=list, description="more qemu arguments (escape hatch)")


class VmNode(NodeBase, VmFields):
    """kind: vm — a qemu guest wired with tunlab's TAP devices."""

    kind: Literal["vm"]


DEFAULT_IMAGE = "minimal"
DEFAULT_BOOT_TIMEOUT = 120.0
SOCKET_HELPERS = "ping, iperf3 (debian image), tcp_stream with the VM as the server, and run()"


def guest_mac(lab_id: str, node: str, iface: str) -> str:
    """A stable, locally administered MAC for a guest NIC (the guest renames NICs by it)."""
    h = hashlib.sha256(f"{lab_id}/{node}/{iface}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


@dataclass
class GuestNic:
    """A NIC of the guest: the TAP devices qemu gets (one per queue) and its MAC."""

    name: str
    mac: str
    devices: list[SyncDevice] = field(default_factory=list)


class VmHandle(NodeHandle):
    """A VM node: commands go through its agent; its sockets live in the guest's kernel."""

    in_guest = True

    def __init__(self, name: str, netns: NetNamespace, node: VmNode, ctx: LabContext) -> None:
        super().__init__(name, "vm", netns, node.env)
        self.node = node
        self.ctx = ctx
        self.nics: dict[str, GuestNic] = {}
        self.process: Process | None = None
        self.agent: Agent | None = None
        self.accel = "tcg"
        self.accel_reason = ""
        self.console = labs_dir() / f"{ctx.lab_name}.{name}.console"
        self.boot_seconds: float | None = None

    def nic(self, iface: str, mac: str | None) -> GuestNic:
        if iface not in self.nics:
            self.nics[iface] = GuestNic(iface, mac or guest_mac(self.ctx.lab_id, self.name, iface))
        return self.nics[iface]

    def _agent(self) -> Agent:
        if self.agent is None:
            raise LabError(f"VM node '{self.name}' is not running (its guest has not booted)")
        return self.agent

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        from tunlab._vm.agent import AgentTimeout

        try:
            answer = self._agent().run(
                list(argv), timeout=timeout, input=input, env={**self.env, **(env or {})}
            )
        except AgentTimeout as exc:
            raise subprocess.TimeoutExpired(list(argv), timeout or 0, output=str(exc).encode()) from None
        return ExecResult(answer.code, answer.stdout, answer.stderr)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        raise LabError(
            f"VM node '{self.name}': programs run in the guest through its agent; use run() "
            "(it returns the exit code and output), or `tunlab exec`"
        )

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        raise LabError(
            f"VM node '{self.name}': its sockets live in the guest's kernel, not this process. "
            f"Traffic helpers that work with VM nodes: {SOCKET_HELPERS}"
        )

    def logs(self, tail: int = 200) -> str:
        """The guest's serial console."""
        try:
            lines = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])


class VmDriver(NodeDriver):
    kind = "vm"
    model = VmNode
    fields = VmFields
    rank = 20
    parallel = True
    interfaces_in_guest = True

    def memory(self, node: NodeBase) -> int | None:
        return getattr(node, "memory", None) or 256

    # ---- validation ---------------------------------------------------------------------------
    def check(self, node: NodeBase) -> list[NodeIssue]:
        vm = cast("VmNode", node)
        issues: list[NodeIssue] = []
        from tunlab._vm.images import available, recipes_dir

        if vm.image is not None and vm.image not in available():
            issues.append((("image",), f"no VM image recipe {vm.image!r} in {recipes_dir()} (recipes: "
                                       f"{', '.join(available()) or 'none'})"))  # fmt: skip
        for key in ("kernel", "initrd", "root_image"):
            value = getattr(vm, key)
            if value is not None and not os.path.isfile(value):
                issues.append(((key,), f"{value!r} is not a file"))
        if vm.initrd is not None and vm.kernel is None:
            issues.append((("initrd",), "initrd goes with kernel (your own kernel); images bring their own"))
        if vm.root_image is not None and vm.root not in (None, "image"):
            issues.append((("root_image",), f"root_image is for root: image (this node has root: {vm.root})"))
        if vm.root == "image" and vm.root_image is None and (vm.image or DEFAULT_IMAGE) == "minimal":
            issues.append(
                (("root",), "root: image needs image: debian or a root_image (minimal has no root image)")
            )
        if vm.kernel is not None and vm.image is not None:
            issues.append((("kernel",), "give image or kernel, not both"))
        for i, share in enumerate(vm.shares):
            parts = share.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
                issues.append((("shares", i), f"{share!r}: write host-dir:/guest/path[:ro|rw]"))
                continue
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                issues.append((("shares", i), f"{share!r}: the mode is ro or rw, not {parts[2]!r}"))
            if not os.path.isdir(parts[0]):
                issues.append((("shares", i), f"{parts[0]!r} is not a directory on this host"))
        for key, settings in vm.interfaces.items():
            if settings.type is not None:
                why = "a VM's interfaces are its virtio NICs: tun/tap devices are for netns or containers"
                issues.append((("interfaces", key, "type"), why))
            if settings.offload is not None and not isinstance(settings.offload, bool):
                why = "on a VM NIC offload is true or false (the virtio-net header on its TAP)"
                issues.append((("interfaces", key, "offload"), why))
        for i, arg in enumerate(vm.qemu_args):
            if arg in ("-netdev", "-chardev", "-mon", "-kernel", "-initrd", "-name"):
                issues.append(
                    (("qemu_args", i), f"{arg} is set by tunlab; qemu_args may add devices and options")
                )
        return issues

    def check_available(self) -> None:
        from tunlab._vm.qemu import require_qemu

        require_qemu()

    # ---- lifecycle --------------------------------------------------------------------------
    def planned(self, ctx: LabContext, name: str, node: NodeBase) -> Resources:
        group = cgroups.node_group(ctx.lab_id, name)
        return {
            "netns": ns_name(ctx.lab_id, name),
            "qemu_name": f"tl-{ctx.lab_id}-{name}",
            "cgroup": str(group) if group is not None else None,
        }

    def create(self, ctx: LabContext, name: str, node: NodeBase) -> NodeHandle:
        """The host-side namespace and the node's cgroup; the guest boots in start() once its
        links exist."""
        ns = NetNamespace.create(ns_name(ctx.lab_id, name))
        handle = VmHandle(name, ns, cast("VmNode", node), ctx)
        handle.group = cgroups.node_group(ctx.lab_id, name)
        if handle.group is not None:
            cgroups.create(handle.group)
        return handle

    def start_many(self, handles: dict[str, NodeHandle], say: Any = None) -> None:
        """Boot every guest at once and wait for their agents; on failure stop them all."""
        from tunlab._vm import images

        vms = {n: cast(VmHandle, h) for n, h in handles.items()}
        needed = {
            (h.node.image or DEFAULT_IMAGE, h.node.kernel_package)
            for h in vms.values()
            if h.node.kernel is None
        }
        built = {
            key: images.ensure(key[0], kernel_package=key[1], say=say) for key in sorted(needed, key=str)
        }
        # also the minimal image for a user kernel without its own initrd
        errors: dict[str, BaseException] = {}
        threads = []
        for name, handle in vms.items():

            def boot(n: str = name, h: VmHandle = handle) -> None:
                try:
                    self._boot(h, built)
                except BaseException as exc:
                    errors[n] = exc

            t = threading.Thread(target=boot, name=f"tunlab-boot-{name}")
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        if errors:
            for handle in vms.values():
                self._stop(handle)
            name, exc = next(iter(errors.items()))
            if isinstance(exc, LabError):
                raise exc
            raise LabError(f"VM node '{name}': {type(exc).__name__}: {exc}") from exc

    def _boot(self, h: VmHandle, built: dict[tuple[str, str | None], Any]) -> None:
        from tunlab._vm import images, qemu
        from tunlab._vm.agent import Agent

        node = h.node
        if node.kernel is not None:
            kernel = Path(node.kernel)
            initrd = Path(node.initrd) if node.initrd else images.ensure(DEFAULT_IMAGE).initrd
            root_file = Path(node.root_image) if node.root_image else None
        else:
            image = built[(node.image or DEFAULT_IMAGE, node.kernel_package)]
            kernel, initrd, root_file = image.kernel, image.initrd, image.rootfs
            if node.root_image:
                root_file = Path(node.root_image)
        root = node.root or ("image" if root_file is not None and node.image == "debian" else "initramfs")
        if root == "image" and root_file is None:
            raise LabError(f"VM node '{h.name}': root: image, but its image has no root file")
        accel = node.accel or "auto"
        if accel == "auto":
            h.accel, h.accel_reason = qemu.detect_accel(kernel, initrd)
        else:
            h.accel, h.accel_reason = accel, "asked for"
        shares = []
        for i, spec in enumerate(node.shares):
            host, _guest_path, *mode = spec.split(":")
            shares.append(qemu.Share(host, f"share{i}", readonly=(mode or ["ro"])[0] == "ro"))
        if root == "host":
            shares.append(qemu.Share("/", "hostroot", readonly=True))
        append = (
            f"console=ttyS0 panic=-1 quiet tunlab.root={root} tunlab.hostname={h.name} {node.append or ''}"
        )
        h.console.parent.mkdir(parents=True, exist_ok=True)
        h.console.write_bytes(b"")
        guest = qemu.Guest(
            name=f"tl-{h.ctx.lab_id}-{h.name}",
            kernel=kernel,
            initrd=initrd,
            append=append.strip(),
            memory=node.memory or 256,
            cpus=node.cpus or max(1, max((len(n.devices) for n in h.nics.values()), default=1)),
            accel=h.accel,
            root_image=root_file if root == "image" else None,
            shares=shares,
            nics=[qemu.Nic([d.fileno() for d in nic.devices], nic.mac) for nic in h.nics.values()],
            console=h.console,
            log=h.console.with_suffix(".qemu.log"),
            extra=list(node.qemu_args),
        )
        start = time.monotonic()
        h.process = qemu.Process(guest, group=h.group)
        for nic in h.nics.values():  # qemu holds them now: the TAPs live exactly as long as it
            for dev in nic.devices:
                dev.close()
        h.agent = Agent(h.process.agent_sock, h.name)
        timeout = node.boot_timeout or DEFAULT_BOOT_TIMEOUT
        self._wait_booted(h, start + timeout, timeout)
        h.boot_seconds = time.monotonic() - start
        for share_spec, share in zip(node.shares, shares, strict=False):
            guest_path = share_spec.split(":")[1]
            done = h.run(["sh", "-c", f"mkdir -p {shlex.quote(guest_path)} && mount -t 9p -o "
                                      f"trans=virtio,version=9p2000.L{',ro' if share.readonly else ''} "
                                      f"{share.tag} {shlex.quote(guest_path)}"], timeout=30)  # fmt: skip
            if not done.ok:
                raise LabError(
                    f"VM node '{h.name}': mounting {share_spec!r} failed: {done.stderr.decode().strip()}"
                )

    def _wait_booted(self, h: VmHandle, deadline: float, timeout: float) -> None:
        """Until the agent says READY; a panic on the console, qemu exiting or the deadline
        fail at once, with the console's last lines."""
        assert h.agent is not None
        assert h.process is not None
        while not h.agent.wait_ready(0.25):
            console = h.logs(400)
            panic = next((ln for ln in console.splitlines() if "Kernel panic" in ln), None)
            exited = h.agent.closed or not h.process.alive()
            if panic is not None:
                why = f"the guest kernel panicked: {panic.split(']', 1)[-1].strip()}"
            elif exited:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    h.process.popen.wait(2)
                why = "qemu exited" + (f": {h.process.stderr_tail()}" if h.process.stderr_tail() else "")
            elif time.monotonic() > deadline:
                why = f"not ready within {timeout:g} s"
            else:
                continue
            tail = "\n".join(console.splitlines()[-8:]) or "(the console is empty)"
            raise LabError(f"VM node '{h.name}' did not boot ({why}); console:\n{tail}")

    def configure(self, handle: NodeHandle, ifaces: list[Any], node: NodeBase) -> None:
        """Interfaces (by MAC), MTU, addresses, then sysctls and routes: one script in the guest."""
        h = cast(VmHandle, handle)
        lines = ["set -e"]
        for iface in ifaces:
            nic = h.nics.get(iface.name)
            if nic is None:
                continue
            q = shlex.quote(iface.name)
            lines += [
                'dev=""',
                f'for f in /sys/class/net/*; do [ "$(cat $f/address)" = {nic.mac} ] && dev=${{f##*/}}; done',
                f'[ -n "$dev" ] || {{ echo "no NIC with MAC {nic.mac} for {iface.name}" >&2; exit 3; }}',
                f'[ "$dev" = {q} ] || ip link set dev "$dev" name {q}',
            ]
            lines.append(f"echo 0 > /proc/sys/net/ipv6/conf/{iface.name}/accept_dad || true")
            mtu = f" mtu {iface.settings.mtu}" if iface.settings.mtu else ""
            lines.append(f"ip link set dev {q}{mtu} up")
            for addr in iface.settings.ipv4:
                lines.append(f"ip addr add {addr} dev {q}")
            for addr in iface.settings.ipv6:
                lines.append(f"ip -6 addr add {addr} dev {q}")
        lines.append(f"hostname {shlex.quote(h.name)} || true")
        lines.append(f"printf %s {shlex.quote(h.ctx.hosts_file(h.name))} > /etc/hosts")
        for key, value in node.sysctls.items():
            path = "/proc/sys/" + key.replace(".", "/")
            lines.append(f"echo {shlex.quote(str(value))} > {shlex.quote(path)}")
        for route in node.routes:
            net = route.network()
            fam = "-6 " if net.version == 6 else ""
            target = f" via {route.via}" if route.via is not None else ""
            dev = f" dev {shlex.quote(route.dev)}" if route.dev else ""
            metric = f" metric {route.metric}" if route.metric is not None else ""
            lines.append(f"ip {fam}route add {net}{target}{dev}{metric}")
        done = h.run(["sh", "-c", "\n".join(lines)], timeout=60)
        if not done.ok:
            raise LabError(
                f"configuring VM node '{h.name}' failed: {done.stderr.decode(errors='replace').strip()}"
            )

    def resources(self, handle: NodeHandle) -> Resources:
        h = cast(VmHandle, handle)
        out: Resources = {
            "netns": h.netns.name or h.netns.path,
            "qemu_name": f"tl-{h.ctx.lab_id}-{h.name}",
            "console": str(h.console),
            "accel": h.accel,
            "accel_reason": h.accel_reason,
        }
        if h.boot_seconds is not None:
            out["boot_seconds"] = round(h.boot_seconds, 3)
        if h.process is not None:
            out["qemu_pid"] = h.process.pid
            out["qemu_start"] = process_start(h.process.pid)
        return out

    def _stop(self, h: VmHandle) -> None:
        if h.process is not None:
            h.process.stop()
            h.process = None
        if h.agent is not None:
            h.agent.close()
            h.agent = None
        for nic in h.nics.values():
            for dev in nic.devices:
                with contextlib.suppress(OSError):
                    dev.close()

    def failure(self, handle: NodeHandle) -> str | None:
        assert isinstance(handle, VmHandle)
        proc = handle.process
        code = proc.popen.poll() if proc is not None else None
        if proc is None or code is None:
            return super().failure(handle)
        return f"its qemu (pid {proc.popen.pid}) {how_it_ended(code)}" + (
            f"; its log: {proc.guest.log}" if proc.guest.log else ""
        )

    def destroy(self, handle: NodeHandle) -> None:
        h = cast(VmHandle, handle)
        self._stop(h)
        if h.group is not None:
            cgroups.end(h.group, h.node.stop_grace)
        h.netns.delete()
        for path in (h.console, h.console.with_suffix(".qemu.log")):
            with contextlib.suppress(OSError):
                path.unlink()

    def reap(self, ctx: LabContext, name: str, resources: Resources) -> list[str]:
        problems = []
        pid, start = resources.get("qemu_pid"), resources.get("qemu_start")
        if pid is not None:
            _kill_qemu(int(pid), start, str(resources.get("qemu_name", f"tl-{ctx.lab_id}-{name}")))
        for pid_ in _qemu_pids(f"tl-{ctx.lab_id}-{name}"):
            _kill_qemu(pid_, None, f"tl-{ctx.lab_id}-{name}")
        if resources.get("cgroup"):
            problems += cgroups.end(Path(str(resources["cgroup"])))
        problem = remove_namespace(str(resources.get("netns") or ns_name(ctx.lab_id, name)))
        if problem:
            problems.append(problem)
        console = resources.get("console")
        if console:
            for path in (Path(str(console)), Path(str(console)).with_suffix(".qemu.log")):
                with contextlib.suppress(OSError):
                    path.unlink()
        return problems

    def reap_lab(self, ctx: LabContext) -> list[str]:
        for pid in _qemu_pids(f"tl-{ctx.lab_id}-"):
            _kill_qemu(pid, None, f"tl-{ctx.lab_id}-")
        return []

    def inspect_extra(self, lab_name: str, name: str, resources: Resources) -> dict[str, Any]:
        """The accelerator and why, the console log (its path and last lines) and the guest's
        own interfaces, read through the agent by the lab's holder."""
        out: dict[str, Any] = {}
        if resources.get("accel"):
            out["accel"] = f"{resources['accel']} ({resources.get('accel_reason') or 'asked for'})"
        console = resources.get("console")
        if console:
            out["console"] = str(console)
            with contextlib.suppress(OSError):
                out["console_tail"] = Path(str(console)).read_text(errors="replace").splitlines()[-10:]
        from tunlab.topologies._operations import exec_in_guest

        try:
            done = exec_in_guest(lab_name, name, ["sh", "-c", GUEST_INTERFACES], timeout=10)
        except (LabError, ValueError, OSError) as exc:
            out["guest_error"] = str(exc)
            return out
        if done.code == 0:
            out["guest_interfaces"] = _guest_interfaces(done.stdout.decode(errors="replace"))
        else:
            out["guest_error"] = done.stderr.decode(errors="replace").strip() or f"exit {done.code}"
        return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _qemu_pids(name_prefix: str) -> list[int]:
    """qemu processes whose -name starts with name_prefix (tunlab names them tl-<lab>-<node>)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _cmdline(int(entry))
        if not argv or not os.path.basename(argv[0]).startswith("qemu-system"):
            continue
        with contextlib.suppress(ValueError, IndexError):
            if argv[argv.index("-name") + 1].startswith(name_prefix):
                out.append(int(entry))
    return out


def _kill_qemu(pid: int, start: str | None, name_prefix: str) -> None:
    """SIGKILL a dead lab's qemu: only one still running with our name (a reused pid is not ours)."""
    if start is not None and process_start(pid) != start:
        return
    argv = _cmdline(pid)
    try:
        named = argv[argv.index("-name") + 1].startswith(name_prefix)
    except (ValueError, IndexError):
        named = False
    if named:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# each interface of the guest on one line (sysfs), then its addresses (`ip -o addr`, busybox's too)
GUEST_INTERFACES = (
    "for d in /sys/class/net/*; do n=${d##*/}; s=$d/statistics; "
    'echo "if $n $(cat $d/mtu) $(cat $d/flags) $(cat $d/address) $(cat $s/rx_packets) '
    '$(cat $s/tx_packets) $(cat $s/rx_bytes) $(cat $s/tx_bytes)"; done; ip -o addr'
)


def _guest_interfaces(text: str) -> list[dict[str, Any]]:
    """GUEST_INTERFACES' output as inspect's interface entries (lo left out, as for nodes)."""
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 9 and words[0] == "if" and words[1] != "lo":
            _, ifname, mtu, flags, mac, rxp, txp, rxb, txb = words
            found[ifname] = {
                "name": ifname, "kind": "guest", "state": "up" if int(flags, 16) & 1 else "down",
                "mtu": int(mtu), "mac": mac, "addresses": [], "rx_packets": int(rxp), "tx_packets": int(txp),
                "rx_bytes": int(rxb), "tx_bytes": int(txb),
            }  # fmt: skip
        elif len(words) >= 4 and words[2] in ("inet", "inet6") and words[1].rstrip(":") in found:
            if "scope" in words and words[words.index("scope") + 1] == "link":
                continue  # link-local, as for nodes
            found[words[1].rstrip(":")]["addresses"].append(words[3])
    return list(found.values())
