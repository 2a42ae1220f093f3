"""kind: netns — a node is a named network namespace (tl-<lab id>-<node>)."""

from __future__ import annotations

import errno
import os
from typing import Literal

from tunlab._linux.netns import NETNS_RUN_DIR, NetNamespace
from tunlab.errors import LabError
from tunlab.topologies._drivers.base import LabContext, NodeDriver, NodeHandle, Resources
from tunlab.topologies._drivers.sysctls import LAB_SYSCTLS, write_sysctls
from tunlab.topologies._fields import NodeBase
from tunlab.topologies._state import ns_name, owned_namespaces


class NetnsNode(NodeBase):
    """kind: netns — a network namespace of its own (tl-<lab id>-<node>)."""

    kind: Literal["netns"] = "netns"


def remove_namespace(name: str) -> str | None:
    """Delete a named namespace of ours: the bind mount, and the mount-point file even when the
    mount never happened (a holder killed in between). One already gone is fine; the problem
    met, or None."""
    try:
        NetNamespace(os.path.join(NETNS_RUN_DIR, name), name=name).delete()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            return f"namespace {name}: {exc}"
    return None


class NetnsDriver(NodeDriver):
    kind = "netns"
    model = NetnsNode
    rank = 0  # the default kind

    def planned(self, ctx: LabContext, name: str, node: NodeBase) -> Resources:
        return {"netns": ns_name(ctx.lab_id, name)}

    def create(self, ctx: LabContext, name: str, node: NodeBase) -> NodeHandle:
        ns = NetNamespace.create(
            ns_name(ctx.lab_id, name), sysctls=LAB_SYSCTLS, setup=lambda: write_sysctls(node, early=True)
        )
        return NodeHandle(name, self.kind, ns, node.env)

    def resources(self, handle: NodeHandle) -> Resources:
        return {"netns": handle.netns.name or handle.netns.path}

    def destroy(self, handle: NodeHandle) -> None:
        handle.netns.delete()

    def reap(self, ctx: LabContext, name: str, resources: Resources) -> list[str]:
        problem = remove_namespace(str(resources.get("netns") or ns_name(ctx.lab_id, name)))
        return [problem] if problem else []

    def attach(self, ctx: LabContext, name: str, resources: Resources, env: dict[str, str]) -> NodeHandle:
        where = str(resources.get("netns") or ns_name(ctx.lab_id, name))
        try:
            ns = NetNamespace.open(where)
        except OSError:
            raise LabError(
                f"node '{name}' of lab '{ctx.lab_name}': its namespace {where} is gone "
                "(was the lab's holder killed? `tunlab gc` cleans up)"
            ) from None
        return NodeHandle(name, self.kind, ns, env)

    def reap_lab(self, ctx: LabContext) -> list[str]:
        return [p for p in (remove_namespace(n) for n in owned_namespaces(ctx.lab_id)) if p]
