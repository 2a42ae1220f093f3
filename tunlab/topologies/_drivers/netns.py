"""kind: netns — a node is a named network namespace (tl-<lab id>-<node>) with its own cgroup,
hostname (UTS namespace) and, unless `files: shared`, its own mount namespace: a fresh /run,
/tmp and /sys, its /etc/hosts and the files the topology places (tunlab/_linux/nodens.py)."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from tunlab._linux import cgroups, nodens, procs
from tunlab._linux.netns import NETNS_RUN_DIR, NetNamespace
from tunlab.errors import LabError
from tunlab.topologies._drivers.base import LabContext, NodeDriver, NodeHandle, NodeIssue, Resources
from tunlab.topologies._drivers.sysctls import LAB_SYSCTLS, write_sysctls
from tunlab.topologies._fields import NodeBase, Strict
from tunlab.topologies._state import ns_name, owned_namespaces, run_dir


class NodeFile(Strict):
    """A file placed in the node: given content, or a host file bound read-only."""

    path: str = Field(description="absolute path inside the node")
    content: str | None = Field(None, description="the file's text")
    host: str | None = Field(None, description="a host file shown read-only at path")


class NetnsFields(Strict):
    """kind: netns — what a namespace node has besides every node's fields."""

    files: Literal["private", "shared"] | list[NodeFile] = Field(
        "private",
        description="private (default): own /run, /tmp, /sys, /etc/hosts; shared: the host's; "
        "or a list of files to place (private too)",
    )
    private_dirs: list[str] = Field(default_factory=list, description="more directories with a fresh tmpfs")

    @field_validator("private_dirs")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                raise ValueError(f"private_dirs entry {path!r}: give an absolute path without '..'")
        return value


class NetnsNode(NodeBase, NetnsFields):
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


def hold_dir(lab_id: str, node: str) -> Path:
    """Where a node's mount and UTS namespaces are held (bind mounts) while the lab lives."""
    return run_dir() / "nodes" / lab_id / node


@dataclass(frozen=True)
class Teardown:
    """What removing one node takes, from its handle or its state record."""

    netns: str  # the namespace's path
    group: str | None  # its cgroup
    hold: str | None  # its held mount/UTS namespaces
    grace: float  # seconds between SIGTERM and the kill

    @classmethod
    def of(cls, netns_path: str, record: Resources) -> Teardown:
        grace = record.get("grace")
        grace = cgroups.DEFAULT_GRACE if grace is None else float(grace)
        return cls(netns_path, record.get("cgroup"), record.get("hold"), grace)


def end_processes(nodes: list[Teardown]) -> list[str]:
    """End everything the nodes run: their cgroups (SIGTERM, each node's grace, cgroup.kill, all
    at once), then any other process still in their network namespaces (one pass over /proc);
    the problems met."""
    problems = cgroups.end_many({Path(n.group): n.grace for n in nodes if n.group})
    inodes: dict[int, Teardown] = {}
    for node in nodes:
        with contextlib.suppress(OSError):
            inodes[os.stat(node.netns).st_ino] = node
    found = procs.by_netns(set(inodes)) if inodes else {}
    if found:
        grace = max(inodes[i].grace for i in found)
        left = set(procs.end([pid for pids in found.values() for pid in pids], grace))
        for inode, pids in found.items():
            if left & set(pids):
                problems.append(f"processes {sorted(left & set(pids))} in {inodes[inode].netns} did not end")
    return problems


def teardown(nodes: list[Teardown]) -> list[str]:
    """Processes first (so nothing holds the namespaces), then the held namespaces, the
    network namespaces; the problems met."""
    problems = end_processes(nodes)
    problems += nodens.remove_many([Path(n.hold) for n in nodes if n.hold])
    for node in nodes:
        problem = remove_namespace(os.path.basename(node.netns))
        if problem:
            problems.append(problem)
    return problems


def node_files(node: NetnsNode) -> nodens.NodeFiles | None:
    """The node's private files, or None for the host's (files: shared)."""
    if node.files == "shared":
        return None
    entries = node.files if isinstance(node.files, list) else []
    return nodens.NodeFiles(
        private_dirs=node.private_dirs,
        contents={f.path: (f.content or "").encode() for f in entries if f.host is None},
        host_files={f.path: f.host for f in entries if f.host is not None},
    )


class NetnsDriver(NodeDriver):
    kind = "netns"
    model = NetnsNode
    fields = NetnsFields
    rank = 0  # the default kind

    def check(self, node: NodeBase) -> list[NodeIssue]:
        assert isinstance(node, NetnsNode)
        issues: list[NodeIssue] = []
        private = [*nodens.PRIVATE_DIRS, *node.private_dirs]
        for i, path in enumerate(node.private_dirs):
            if not os.path.isdir(path) and not path.startswith(tuple(f"{d}/" for d in nodens.PRIVATE_DIRS)):
                issues.append(
                    (("private_dirs", i), f"{path} does not exist: tunlab never creates directories on "
                     "the host; pick one that exists, or one under /run or /tmp")
                )  # fmt: skip
        for i, entry in enumerate(node.files if isinstance(node.files, list) else []):
            issues += _file_issues(i, entry, private)
        return issues

    def planned(self, ctx: LabContext, name: str, node: NodeBase) -> Resources:
        group = cgroups.node_group(ctx.lab_id, name)
        return {
            "netns": ns_name(ctx.lab_id, name),
            "cgroup": str(group) if group is not None else None,
            "hold": str(hold_dir(ctx.lab_id, name)),
            "grace": node.stop_grace,
        }

    def create(self, ctx: LabContext, name: str, node: NodeBase) -> NodeHandle:
        assert isinstance(node, NetnsNode)
        ns = NetNamespace.create(
            ns_name(ctx.lab_id, name), sysctls=LAB_SYSCTLS, setup=lambda: write_sysctls(node, early=True)
        )
        try:
            group = cgroups.node_group(ctx.lab_id, name)  # made with the node's first process
            hold = hold_dir(ctx.lab_id, name)
            if not (hold.parent / "hosts").exists():
                nodens.write_lab_hosts(hold.parent, ctx.hosts)
            spaces = nodens.NodeSpaces.prepare(hold, ns, name, node_files(node), group)
        except BaseException:
            teardown([Teardown.of(ns.path, self.planned(ctx, name, node))])
            raise
        handle = NodeHandle(name, self.kind, ns, node.env, spaces)
        handle.stop_grace = node.stop_grace
        return handle

    def resources(self, handle: NodeHandle) -> Resources:
        group = handle.spaces.group if handle.spaces is not None else None
        return {
            "netns": handle.netns.name or handle.netns.path,
            "cgroup": str(group) if group is not None else None,
            "hold": str(handle.spaces.hold) if handle.spaces is not None else None,
        }

    def destroy(self, handle: NodeHandle) -> None:
        problems = self.destroy_many([handle])
        if problems:
            raise LabError("; ".join(problems))

    def destroy_many(self, handles: list[NodeHandle]) -> list[str]:
        nodes = []
        for handle in handles:
            if handle.spaces is not None:
                handle.spaces.close()
            record = {**self.resources(handle), "grace": handle.stop_grace}
            nodes.append(Teardown.of(handle.netns.path, record))
            handle.netns.close()  # the named mount stays until teardown removes it
        return teardown(nodes)

    def reap(self, ctx: LabContext, name: str, resources: Resources) -> list[str]:
        """A dead holder's node: its processes (cgroup, then the namespace sweep), its held
        namespaces, its network namespace — each from the record."""
        where = str(resources.get("netns") or ns_name(ctx.lab_id, name))
        return teardown([Teardown.of(os.path.join(NETNS_RUN_DIR, where), resources)])

    def attach(self, ctx: LabContext, name: str, resources: Resources, env: dict[str, str]) -> NodeHandle:
        where = str(resources.get("netns") or ns_name(ctx.lab_id, name))
        try:
            ns = NetNamespace.open(where)
        except OSError:
            raise LabError(
                f"node '{name}' of lab '{ctx.lab_name}': its namespace {where} is gone — deleted "
                "from outside the lab, or the lab's holder was killed (`tunlab ls` says which: "
                "`tunlab down` a degraded lab, `tunlab gc` a dead one's)"
            ) from None
        group = resources.get("cgroup")
        spaces = None
        if resources.get("hold"):
            spaces = nodens.NodeSpaces.attach(Path(resources["hold"]), ns, Path(group) if group else None)
        return NodeHandle(name, self.kind, ns, env, spaces)

    def reap_lab(self, ctx: LabContext) -> list[str]:
        problems = cgroups.remove_lab(ctx.lab_id)
        hold = run_dir() / "nodes" / ctx.lab_id
        if hold.is_dir():
            for node in hold.iterdir():
                if node.is_dir():
                    problems += nodens.remove(node)
        return problems + [p for p in (remove_namespace(n) for n in owned_namespaces(ctx.lab_id)) if p]


def _file_issues(i: int, entry: NodeFile, private: list[str]) -> list[NodeIssue]:
    where = ("files", i)
    path = PurePosixPath(entry.path)
    if not path.is_absolute() or ".." in path.parts:
        return [((*where, "path"), f"{entry.path!r}: give an absolute path without '..'")]
    if (entry.content is None) == (entry.host is None):
        return [(where, f"{entry.path}: give exactly one of content or host")]
    issues: list[NodeIssue] = []
    under_private = any(entry.path.startswith(f"{d.rstrip('/')}/") for d in private)
    if not under_private and not os.path.isfile(entry.path):
        issues.append(
            ((*where, "path"), f"{entry.path} does not exist on the host: tunlab never creates files "
             "there; place it under /run, /tmp or a private_dirs entry")
        )  # fmt: skip
    if entry.host is not None and not os.path.isfile(entry.host):
        issues.append(((*where, "host"), f"{entry.host} is not a file on this host"))
    return issues
