"""kind: container — a docker container with network mode `none`; tunlab wires its namespace.

The container's network namespace is reached from outside through /proc/PID/ns/net, so veth
ends, tun-pair devices and addresses go in exactly as for namespace nodes. Commands run with
`docker exec` (the container's filesystem); sockets open in its namespace directly.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from tunlab._linux.netns import NetNamespace, finish, write_sysctls_here
from tunlab.errors import LabError
from tunlab.topologies import _containers as containers
from tunlab.topologies import _images as images
from tunlab.topologies._containers import LABEL_ID, LABEL_LAB, LABEL_OWNER, docker_client
from tunlab.topologies._drivers.base import (
    ExecResult,
    LabContext,
    NodeDriver,
    NodeHandle,
    NodeIssue,
    Resources,
)
from tunlab.topologies._drivers.sysctls import LAB_SYSCTLS, write_sysctls
from tunlab.topologies._fields import Argv, NodeBase, Strict
from tunlab.topologies._state import ns_name


class ContainerFields(Strict):
    """kind: container — a docker container (network mode none) wired by tunlab."""

    image: str | None = Field(None, description="a local image; tunlab/base is built on first use")
    command: Argv | None = None
    binds: list[str] = Field(default_factory=list)
    cap_add: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)
    privileged: bool | None = None
    workdir: str | None = None


class ContainerNode(NodeBase, ContainerFields):
    """kind: container — a docker container (network mode none) wired by tunlab."""

    kind: Literal["container"]


class ContainerHandle(NodeHandle):
    """A running container node."""

    def __init__(self, name: str, container: Any, netns: NetNamespace, env: dict[str, str]) -> None:
        super().__init__(name, "container", netns, env)
        self.container = container
        self.checked = 0.0  # when the holder last asked docker whether it runs
        self.dead: str | None = None  # why it stopped, once it did

    @property
    def id(self) -> str:
        return str(self.container.id)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run argv inside the container (docker exec); returns (code, stdout, stderr)."""
        if input is not None or timeout is not None:
            proc = self.popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            out, err = finish(proc, input, timeout)
            return ExecResult(proc.returncode, out, err)
        code, (out, err) = self.container.exec_run(
            list(argv), environment={**self.env, **(env or {})}, demux=True
        )
        return ExecResult(int(code), out or b"", err or b"")

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside the container (`docker exec -i`), streams like subprocess.Popen."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments, not a string")
        if kwargs.pop("shell", False):
            raise ValueError("shell=True is not allowed: pass an argv list")
        env = {**self.env, **(kwargs.pop("env", None) or {})}
        cmd = ["docker", "exec", "-i"]
        for key, value in env.items():
            if key in self.env or key not in os.environ:
                cmd += ["-e", f"{key}={value}"]
        return subprocess.Popen([*cmd, self.id, *argv], **kwargs)

    def interactive(self, argv: Sequence[str]) -> subprocess.Popen[Any]:
        """`docker exec -i` (with -t when this is a terminal): this terminal's streams."""
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        return subprocess.Popen(["docker", "exec", "-i", *tty, self.id, *argv])

    def logs(self, tail: int = 200) -> str:
        return str(self.container.logs(tail=tail).decode(errors="replace"))


class ContainerDriver(NodeDriver):
    kind = "container"
    model = ContainerNode
    fields = ContainerFields
    rank = 10
    parallel = True

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def check_available(self) -> None:
        _ = self.client

    def ensure_image(self, image: str) -> None:
        """The image must be local: tunlab/base is built on first use; others pulled or refused."""
        if images.image_exists(self.client, image):
            return
        if images.is_base(image):
            images.build_base_image(self.client)
            return
        try:
            self.client.images.pull(image)
        except Exception as exc:
            raise LabError(
                f"image '{image}' is not available locally and could not be pulled "
                f"({type(exc).__name__}): build it or `docker load` it first"
            ) from None

    def check(self, node: NodeBase) -> list[NodeIssue]:
        """What docker would refuse at deploy: image references, binds, devices, caps, workdir."""
        node = _container(node)
        issues: list[NodeIssue] = []
        if not node.image:
            issues.append((("image",), "a container node needs an image (tunlab/base is built locally)"))
        elif not _IMAGE_RE.fullmatch(node.image) or ".." in node.image:
            issues.append(
                (("image",), f"{node.image!r} is not an image reference (like tunlab/base or repo/name:tag)")
            )
        for i, bind in enumerate(node.binds):
            why = _bind_problem(bind)
            if why:
                issues.append((("binds", i), f"{bind!r}: {why}"))
        for i, dev in enumerate(node.devices):
            parts = dev.split(":")
            paths_ok = all(p.startswith("/") and ".." not in p.split("/") for p in parts[:2] if p)
            mode_ok = len(parts) < 3 or (parts[2] and set(parts[2]) <= set("rwm"))
            if not paths_ok or not mode_ok or len(parts) > 3:
                issues.append(
                    (("devices", i), f"{dev!r}: write /dev/host[:/dev/container[:rwm]] with absolute paths")
                )
        for i, cap in enumerate(node.cap_add):
            if not _CAP_RE.fullmatch(cap):
                issues.append((("cap_add", i), f"{cap!r} is not a capability name (like NET_ADMIN)"))
        if node.workdir is not None and not node.workdir.startswith("/"):
            issues.append((("workdir",), f"{node.workdir!r}: the working directory must be an absolute path"))
        return issues

    def planned(self, ctx: LabContext, name: str, node: NodeBase) -> Resources:
        return {"container": ns_name(ctx.lab_id, name)}

    def create(self, ctx: LabContext, name: str, node: NodeBase) -> NodeHandle:
        node = _container(node)
        assert node.image is not None  # validated
        self.ensure_image(node.image)
        cname = ns_name(ctx.lab_id, name)
        labels = {LABEL_LAB: ctx.lab_name, LABEL_ID: ctx.lab_id, LABEL_OWNER: str(os.getpid())}
        kwargs: dict[str, Any] = {
            "name": cname,
            "hostname": name,
            "detach": True,
            "network_mode": "none",
            "labels": labels,
            "environment": dict(node.env),
            "init": True,
            # /etc/hosts: every node of the lab by its first address on each link, as netns
            # nodes see it (docker writes the file; the list form allows a name twice)
            "extra_hosts": [f"{name}:127.0.1.1", *(f"{host}:{address}" for address, host in ctx.hosts)],
        }
        if node.binds:
            kwargs["volumes"] = list(node.binds)
        if node.cap_add:
            kwargs["cap_add"] = list(node.cap_add)
        if node.devices:
            kwargs["devices"] = [d if ":" in d else f"{d}:{d}:rwm" for d in node.devices]
        if node.privileged:
            kwargs["privileged"] = True
        if node.workdir:
            kwargs["working_dir"] = node.workdir
        command = node.command or ["sleep", "infinity"]
        try:
            container = self.client.containers.run(node.image, command, **kwargs)
        except Exception as exc:
            raise LabError(
                f"container '{name}' ({node.image}) did not start: {_docker_message(exc)}"
            ) from None
        try:
            container.reload()
            if container.status != "running":
                raise _exited(container, name)
            pid = int(container.attrs["State"]["Pid"])
            try:
                ns = NetNamespace.from_pid(pid)
                ns.call(_lab_sysctls, node)
            except OSError:
                # its process is gone: it died between starting and wiring (docker may still
                # say "running" for a moment while it reaps it)
                if _exits_soon(container):
                    raise _exited(container, name) from None
                raise
        except BaseException:
            container.remove(force=True)
            raise
        return ContainerHandle(name, container, ns, dict(node.env))

    def failure(self, handle: NodeHandle) -> str | None:
        """The container stopped (docker asked at most once a second per container)."""
        assert isinstance(handle, ContainerHandle)
        now = time.monotonic()
        if now - handle.checked < 1.0:
            return handle.dead
        handle.checked = now
        try:
            handle.container.reload()
        except Exception as exc:  # docker says it is gone
            handle.dead = f"its container is gone ({exc})"
            return handle.dead
        state = handle.container.attrs.get("State", {})
        if state.get("Running", True):
            return None
        handle.dead = (
            f"its container stopped (exit code {state.get('ExitCode')}, {state.get('Error') or 'no error'})"
        )
        return handle.dead

    def destroy(self, handle: NodeHandle) -> None:
        handle.netns.close()
        if isinstance(handle, ContainerHandle):
            try:
                handle.container.remove(force=True)
            except Exception as exc:
                if "No such container" not in str(exc):
                    raise

    def create_many(self, ctx: LabContext, nodes: dict[str, NodeBase]) -> dict[str, NodeHandle]:
        """Start several containers at once; on any failure remove those that did start."""
        for image in {_container(n).image for n in nodes.values()}:
            if image:
                self.ensure_image(image)
        made: dict[str, NodeHandle] = {}
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(nodes)) or 1) as pool:
            futures = {pool.submit(self.create, ctx, name, node): name for name, node in nodes.items()}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    made[futures[fut]] = fut.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            for handle in made.values():
                self.destroy(handle)
            containers.remove_lab_containers(ctx.lab_id)  # anything a failed start left
            raise errors[0]
        return made

    def resources(self, handle: NodeHandle) -> Resources:
        assert isinstance(handle, ContainerHandle)
        return {"container": handle.id, "netns": handle.netns.path}

    def reap(self, ctx: LabContext, name: str, resources: Resources) -> list[str]:
        return containers.remove_lab_containers(ctx.lab_id)

    def attach(self, ctx: LabContext, name: str, resources: Resources, env: dict[str, str]) -> NodeHandle:
        ident = str(resources.get("container") or ns_name(ctx.lab_id, name))
        try:
            container = self.client.containers.get(ident)
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            if container.status != "running" or pid <= 0:
                raise LabError(f"container '{name}' is {container.status}")
            ns = NetNamespace.from_pid(pid)
        except LabError:
            raise
        except Exception as exc:
            raise LabError(
                f"node '{name}' of lab '{ctx.lab_name}': its container {ident} is gone or stopped "
                f"({_docker_message(exc)}); `tunlab gc` cleans up a dead lab"
            ) from None
        return ContainerHandle(name, container, ns, env)

    def reap_lab(self, ctx: LabContext) -> list[str]:
        return containers.remove_lab_containers(ctx.lab_id)


# docker turns IPv6 off in containers it does not give an IPv6 network: a lab wants it on
CONTAINER_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.lo.disable_ipv6": "0",
    **LAB_SYSCTLS,
}


# docker's reference grammar: [registry[:port]/]name[/name...][:tag][@sha256:digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?"
)
_CAP_RE = re.compile(r"(?:CAP_)?[A-Z][A-Z_]*|ALL")
_BIND_MODES = {"ro", "rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave", "rprivate", "nocopy"}


def _bind_problem(bind: str) -> str | None:
    """Why docker would refuse a bind (host:container[:mode]), or None."""
    parts = bind.split(":")
    if len(parts) not in (2, 3):
        return "write host-path:container-path[:ro|rw]"
    src, dst = parts[0], parts[1]
    if not src or not dst:
        return "both paths are needed"
    if not dst.startswith("/"):
        return "the container path must be absolute"
    if not src.startswith("/") and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", src):
        return "the host side must be an absolute path or a volume name"
    if ".." in src.split("/") or ".." in dst.split("/"):
        return "no '..' in bind paths"
    if len(parts) == 3 and not set(parts[2].split(",")) <= _BIND_MODES:
        return f"unknown mode {parts[2]!r} (ro, rw, z, Z, ...)"
    return None


def _container(node: NodeBase) -> ContainerNode:
    assert isinstance(node, ContainerNode), node
    return node


def _lab_sysctls(node: NodeBase) -> None:
    write_sysctls_here(CONTAINER_SYSCTLS)
    write_sysctls(node, early=True)


def _exits_soon(container: Any, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        container.reload()
        if container.status != "running":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _exited(container: Any, name: str) -> LabError:
    logs = container.logs(tail=5).decode(errors="replace").strip()
    code = container.attrs.get("State", {}).get("ExitCode")
    return LabError(
        f"container '{name}' exited at once (status {container.status}, exit code {code}): "
        f"{logs or 'no output'}"
    )


def _docker_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
