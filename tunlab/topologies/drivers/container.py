"""kind: container — a docker container with network mode `none`; tunlab wires its namespace.

The container's network namespace is reached from outside through /proc/PID/ns/net, so veth
ends, tun-pair devices and addresses go in exactly as for namespace nodes. Commands run with
`docker exec` (the container's filesystem); sockets open in its namespace directly.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunlab.errors import LabError
from tunlab.linux.netns import NetNamespace, finish, write_sysctls_here
from tunlab.topologies import images
from tunlab.topologies.containers import LABEL_ID, LABEL_LAB, LABEL_OWNER, docker_client
from tunlab.topologies.drivers.base import ExecResult, NodeDriver, NodeHandle
from tunlab.topologies.drivers.netns import LAB_SYSCTLS, write_sysctls
from tunlab.topologies.state import ns_name

if TYPE_CHECKING:
    from tunlab.topologies.models import Node


class ContainerHandle(NodeHandle):
    """A running container node."""

    def __init__(self, name: str, container: Any, netns: NetNamespace, env: dict[str, str]) -> None:
        super().__init__(name, "container", netns, env)
        self.container = container

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


class ContainerDriver(NodeDriver):
    kind = "container"

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

    def create(self, lab_id: str, name: str, node: Node, lab_name: str = "") -> NodeHandle:
        assert node.image is not None  # validated
        self.ensure_image(node.image)
        cname = ns_name(lab_id, name)
        labels = {LABEL_LAB: lab_name or lab_id, LABEL_ID: lab_id, LABEL_OWNER: str(os.getpid())}
        kwargs: dict[str, Any] = {
            "name": cname,
            "hostname": name,
            "detach": True,
            "network_mode": "none",
            "labels": labels,
            "environment": dict(node.env),
            "init": True,
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
                container.reload()
                if container.status != "running":  # it died between starting and wiring
                    raise _exited(container, name) from None
                raise
        except BaseException:
            container.remove(force=True)
            raise
        return ContainerHandle(name, container, ns, dict(node.env))

    def destroy(self, handle: NodeHandle) -> None:
        handle.netns.close()
        if isinstance(handle, ContainerHandle):
            try:
                handle.container.remove(force=True)
            except Exception as exc:
                if "No such container" not in str(exc):
                    raise

    def create_many(self, lab_id: str, lab_name: str, nodes: dict[str, Node]) -> dict[str, NodeHandle]:
        """Start several containers at once; on any failure remove those that did start."""
        for image in {n.image for n in nodes.values() if n.image}:
            self.ensure_image(image)
        made: dict[str, NodeHandle] = {}
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(nodes)) or 1) as pool:
            futures = {
                pool.submit(self.create, lab_id, name, node, lab_name): name for name, node in nodes.items()
            }
            for fut in concurrent.futures.as_completed(futures):
                try:
                    made[futures[fut]] = fut.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            for handle in made.values():
                self.destroy(handle)
            raise errors[0]
        return made

    def wait_healthy(self, handle: NodeHandle, node: Node) -> None:
        """Wait until the node's healthcheck command succeeds or its file appears."""
        check = node.healthcheck
        if check is None:
            return
        argv = check.command or ["test", "-e", check.file or "/"]
        deadline = time.monotonic() + check.timeout
        last = ExecResult(1, b"", b"")
        while time.monotonic() < deadline:
            last = handle.run(argv, timeout=max(1.0, check.timeout))
            if last.code == 0:
                return
            time.sleep(check.interval)
        what = (
            f"file {check.file} did not appear"
            if check.file and not check.command
            else f"{argv} kept failing"
        )
        detail = last.stderr.decode(errors="replace").strip()[-200:]
        raise LabError(
            f"container '{handle.name}' is not ready after {check.timeout:g} s: {what} {detail}".strip()
        )


# docker turns IPv6 off in containers it does not give an IPv6 network: a lab wants it on
CONTAINER_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.lo.disable_ipv6": "0",
    **LAB_SYSCTLS,
}


def _lab_sysctls(node: Node) -> None:
    write_sysctls_here(CONTAINER_SYSCTLS)
    write_sysctls(node, early=True)


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
