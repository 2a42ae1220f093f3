"""A node's own names and files: a UTS namespace (its hostname) and a mount namespace with a
fresh /run, /tmp and /sys, its /etc/hosts and the files the topology places — held, like a
named network namespace, by bind mounts of /proc/TID/ns/{uts,mnt} on files of a hold
directory, so they outlive the thread that made them and every exec can enter them.

Two nodes can then run the same daemon (its pid file, socket or lock under /run is private),
`hostname` is the node's name, and /sys/class/net lists the node's own interfaces. Nothing a
node mounts reaches the host's mount table.

They are made when the node's first process starts, from a per-lab template: a mount
namespace made once per lab (private, without the host's namespace files, which a copy would
pin), so each node's is a copy of a lean tree and making it is cheap however many
namespaces the host holds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunlab._linux import cgroups
from tunlab._linux.mounts import (
    CLONE_FS,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    check,
    ensure_private,
    hold_namespaces,
    is_bound,
    libc,
    mount,
    mounts_under,
    release_private,
    setns,
    unmount,
    unshare,
)
from tunlab._linux.netns import CLONE_NEWNET, NetNamespace

T = TypeVar("T")

PRIVATE_DIRS = ("/run", "/tmp")  # /var/run is a link to /run on current distributions
#: where namespace files are bound on the host: a copy of one would pin that namespace
NAMESPACE_FILES = ("/run/netns", "/run/docker/netns")
TEMPLATE = "template"  # the lab's template mount namespace, in its hold directory
_DEFAULT_FILES: dict[str, Any] = {"private_dirs": [], "contents": [], "host_files": {}}


@dataclass
class NodeFiles:
    """What a node's mount namespace holds besides the host's files."""

    private_dirs: Sequence[str] = ()  # more directories with a fresh tmpfs
    contents: dict[str, bytes] = field(default_factory=dict)  # path -> content placed there
    host_files: dict[str, str] = field(default_factory=dict)  # path -> host file bound read-only

    def is_default(self) -> bool:
        return not (self.private_dirs or self.contents or self.host_files)


def hosts_text(entries: Iterable[tuple[str, str]], node: str) -> str:
    """/etc/hosts as node sees it: loopback, itself as 127.0.1.1, then every other node's
    (address, name) entry."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{node}"]
    lines += [f"{address}\t{name}" for address, name in entries if name != node]
    return "\n".join(lines) + "\n"


def write_lab_hosts(lab_dir: Path, entries: Iterable[tuple[str, str]]) -> None:
    """The lab's (address, name) list, once, for every node's /etc/hosts (made from it when
    the node's namespaces are)."""
    ensure_private(lab_dir)
    text = "".join(f"{address}\t{name}\n" for address, name in entries)
    part = lab_dir / f".hosts.{threading.get_native_id()}"
    part.write_text(text)
    part.replace(lab_dir / "hosts")  # whole or not at all, whichever node writes it


def _lab_hosts(lab_dir: Path) -> list[tuple[str, str]]:
    try:
        text = (lab_dir / "hosts").read_text()
    except FileNotFoundError:
        return []
    return [(a, n) for a, _, n in (line.partition("\t") for line in text.splitlines()) if n]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on directory: two processes making the same namespaces make them once."""
    import fcntl  # not on Windows, where this module must still import (tunlab._linux is portable code)

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _template(lab_dir: Path) -> int:
    """An fd of the lab's template mount namespace, made on first use."""
    path = lab_dir / TEMPLATE
    if not is_bound(path):
        with _locked(lab_dir):
            if not is_bound(path):
                hold_namespaces(lambda: _setup_template(lab_dir.parent), {"mnt": path})
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _setup_template(holds: Path) -> None:
    """In a fresh thread: a private mount namespace without the host's namespace files — the
    named network namespaces, docker's, every lab's held node namespaces (not the lab
    directories themselves: node files are read from them)."""
    unshare(CLONE_FS | CLONE_NEWNS, "a template mount namespace")
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing of a node's reaches the host
    lab_dirs = {str(p) for p in holds.iterdir()} if holds.is_dir() else set()
    for stale in mounts_under((*NAMESPACE_FILES, str(holds))):
        if stale not in lab_dirs:
            unmount(stale)


class NodeSpaces:
    """A node's UTS (and, with private files, mount) namespace, held under `hold`.

    They (and the node's cgroup) are made when the first process starts in the node, by
    whichever process starts it (the lab's holder, `tunlab exec`), from what `prepare`
    recorded: a node that never runs a program costs nothing, and a lab of hundreds of nodes
    comes up as fast as without them. Once made they are held for the life of the lab.
    """

    def __init__(self, hold: Path, netns: NetNamespace, group: Path | None) -> None:
        self.hold = hold
        self.netns = netns
        self.group = group  # the node's cgroup: execs are born in it
        self._fds: dict[int, int] = {}  # nstype -> open fd
        self._made = False

    # ---- making -------------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls, hold: Path, netns: NetNamespace, hostname: str, files: NodeFiles | None, group: Path | None
    ) -> NodeSpaces:
        """Record what the node's namespaces will be: hostname and, unless None (the host's
        files), its private files (validated by the driver's check before). A node with the
        defaults (its own name, the default private files) records nothing."""
        ensure_private(hold.parent)  # the lab's hold directory (released with the lab)
        if hostname != hold.name or files is None or not files.is_default():
            hold.mkdir(mode=0o700, exist_ok=True)
            spec: dict[str, Any] = {"hostname": hostname, "files": None}
            if files is not None:
                for i, content in enumerate(files.contents.values()):
                    (hold / f"file{i}").write_bytes(content)
                spec["files"] = {
                    "private_dirs": list(files.private_dirs),
                    "contents": list(files.contents),
                    "host_files": files.host_files,
                }
            (hold / "spec.json").write_text(json.dumps(spec))
        return cls(hold, netns, group)

    @classmethod
    def attach(cls, hold: Path, netns: NetNamespace, group: Path | None) -> NodeSpaces:
        """The namespaces of a node another process prepared (`tunlab exec`, a supervisor)."""
        return cls(hold, netns, group)

    def made(self) -> bool:
        """Whether the namespaces exist yet (a process has started in the node)."""
        return is_bound(self.hold / "uts")

    def make(self) -> None:
        """Make and hold the namespaces unless they are (under a lock on the hold directory)."""
        if self._made:
            return
        self.hold.mkdir(mode=0o700, exist_ok=True)
        with _locked(self.hold):
            if not self.made():
                self._make_now()
        self._made = True

    def _make_now(self) -> None:
        try:
            spec = json.loads((self.hold / "spec.json").read_text())
        except FileNotFoundError:
            spec = {"hostname": self.hold.name, "files": _DEFAULT_FILES}
        hostname, raw = spec["hostname"], spec["files"]
        if raw is None:  # files: shared — only the node's name is its own
            holds = {"uts": self.hold / "uts"}
            hold_namespaces(lambda: _setup_uts(self.netns, hostname), holds)
            return
        files = NodeFiles(
            raw["private_dirs"],
            {p: (self.hold / f"file{i}").read_bytes() for i, p in enumerate(raw["contents"])},
            dict(raw["host_files"]),
        )
        (self.hold / "hosts").write_text(hosts_text(_lab_hosts(self.hold.parent), hostname))
        template = _template(self.hold.parent)
        try:
            holds = {"uts": self.hold / "uts", "mnt": self.hold / "mnt"}
            hold_namespaces(lambda: _setup_node(template, self.netns, hostname, self.hold, files), holds)
        finally:
            os.close(template)

    # ---- entering -----------------------------------------------------------------------------
    def _fd(self, name: str, nstype: int) -> int | None:
        if nstype not in self._fds:
            try:
                self._fds[nstype] = os.open(self.hold / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
        return self._fds[nstype]

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args) on a fresh thread inside the node's namespaces (mount, UTS, network)."""
        self.make()
        mnt, uts = self._fd("mnt", CLONE_NEWNS), self._fd("uts", CLONE_NEWUTS)
        box: dict[str, Any] = {}

        def inside() -> None:
            try:
                if mnt is not None:
                    unshare(CLONE_FS, "CLONE_FS")
                    setns(mnt, CLONE_NEWNS, "mount")
                if uts is not None:
                    setns(uts, CLONE_NEWUTS, "UTS")
                setns(self.netns.fd, CLONE_NEWNET, "network")
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=inside, name="tunlab-node", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """argv started inside the node, born in its cgroup (argv list; no shell)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments, not a string")
        if not argv:
            raise ValueError("argv is empty: give a program and its arguments")
        if kwargs.get("shell"):
            raise ValueError("shell=True is not allowed: pass an argv list")
        if "cwd" not in kwargs:
            here = os.getcwd()
            kwargs["cwd"] = here if not here.startswith(PRIVATE_DIRS) else "/"
        if self.group is None:
            return self.call(subprocess.Popen, list(argv), **kwargs)
        cgroups.create(self.group)  # made with the node's first process, like its namespaces
        procs_fd = cgroups.open_procs(self.group)
        try:
            kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), procs_fd)
            return self.call(subprocess.Popen, cgroups.join_argv(procs_fd, list(argv)), **kwargs)
        finally:
            os.close(procs_fd)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """argv to completion: its exit status and output. Output goes to files, not pipes, so a
        command that leaves a daemon behind (which keeps the inherited descriptors) returns when
        the command itself does; the daemon stays the node's."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self.popen(
                argv,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
            try:
                if input is not None:
                    assert proc.stdin is not None
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.write(input)
                    proc.stdin.close()
                proc.wait(timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(list(argv), proc.returncode, out.read(), err.read())

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _setup_uts(netns: NetNamespace, hostname: str) -> None:
    """In a fresh thread: a UTS namespace named hostname (files: shared)."""
    setns(netns.fd, CLONE_NEWNET, "network")
    unshare(CLONE_NEWUTS, "CLONE_NEWUTS")
    _sethostname(hostname)


def _sethostname(hostname: str) -> None:
    raw = hostname.encode()
    check(libc().sethostname(raw, len(raw)), f"setting the hostname {hostname!r}")


def _setup_node(template: int, netns: NetNamespace, hostname: str, hold: Path, files: NodeFiles) -> None:
    """In a fresh thread: the node's namespaces — a copy of the lab's template mount namespace
    with the node's files, and a UTS namespace named hostname."""
    unshare(CLONE_FS, "CLONE_FS")
    setns(template, CLONE_NEWNS, "template mount")
    setns(netns.fd, CLONE_NEWNET, "network")  # /sys mounted below shows this namespace
    unshare(CLONE_NEWNS | CLONE_NEWUTS, "the node's namespaces")
    _sethostname(hostname)
    private = (*PRIVATE_DIRS, *files.private_dirs)

    def inside_private(path: str) -> bool:
        return any(path.startswith(f"{d.rstrip('/')}/") for d in private)

    # binds whose source lives where the tmpfs mounts below will hide it go first
    binds = {"/etc/hosts": str(hold / "hosts")}
    binds |= {p: str(hold / f"file{i}") for i, p in enumerate(files.contents) if not inside_private(p)}
    binds |= {p: h for p, h in files.host_files.items() if not inside_private(p)}
    for target, source in binds.items():
        mount(source, target, None, MS_BIND)
    # host files shown inside the node's own tmpfs: held open now (the tmpfs may cover them)
    later = {
        p: os.open(h, os.O_RDONLY | os.O_CLOEXEC) for p, h in files.host_files.items() if inside_private(p)
    }
    for directory in private:
        if not os.path.isdir(directory) and not inside_private(directory):
            raise OSError(errno.ENOENT, f"private_dirs: {directory} does not exist on the host")
        os.makedirs(directory, exist_ok=True)  # only inside a private tmpfs mounted before it
        mount(
            "tmpfs",
            directory,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            "mode=1777" if directory == "/tmp" else "mode=755",
        )
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # this netns's view
    for path, content in files.contents.items():
        if inside_private(path):  # a private tmpfs of the node's own: the file is written there
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
    try:
        for path, fd in later.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                pass  # the mount point, on the node's own tmpfs
            mount(f"/proc/thread-self/fd/{fd}", path, None, MS_BIND)
    finally:
        for fd in later.values():
            os.close(fd)
    for path in files.host_files:
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def release_lab_dir(lab_dir: Path) -> list[str]:
    """A lab's hold directory once its nodes are gone: everything mounted under it (the nodes'
    namespaces, the template) detached at once with the lab's private mount — one unmount,
    not two per node — then the files and directories."""
    release_private(lab_dir, keep=True)
    problems = []
    if lab_dir.is_dir():
        for entry in lab_dir.iterdir():
            if entry.is_dir():
                problems += remove(entry)
            else:
                if is_bound(entry):  # mounted again by another holder after the detach
                    problems += [p for p in [unmount(entry)] if p]
                with contextlib.suppress(OSError):
                    entry.unlink()
    with contextlib.suppress(OSError):
        lab_dir.rmdir()
    return problems


def remove_many(holds: list[Path]) -> list[str]:
    """remove() for several nodes; where they are all of a lab's nodes, its whole hold
    directory goes at once (release_lab_dir)."""
    problems: list[str] = []
    by_lab: dict[Path, set[Path]] = {}
    for hold in holds:
        by_lab.setdefault(hold.parent, set()).add(hold)
    for lab_dir, group in by_lab.items():
        try:
            present = {p for p in lab_dir.iterdir() if p.is_dir()}
        except OSError:
            continue  # gone already
        if present <= group:
            problems += release_lab_dir(lab_dir)
        else:
            for hold in group:
                problems += remove(hold)
    return problems


def remove(hold: Path) -> list[str]:
    """Unmount a node's namespace files (if they were made) and remove its hold directory;
    the problems met."""
    problems = [p for p in (unmount(hold / n) for n in ("mnt", "uts") if is_bound(hold / n)) if p]
    try:
        entries = list(hold.iterdir())
    except OSError:  # gone already
        return problems
    for entry in entries:
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        hold.rmdir()
    return problems
