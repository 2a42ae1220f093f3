"""Mount and namespace calls through libc (the os module has no mount, umount2 or setns for
mount namespaces), and holding a fresh thread's namespaces by bind mounts — what a node's
private files and names are built from (tunlab/_linux/nodens.py)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
_private_lock = threading.Lock()
_private_done: set[Path] = set()


@functools.cache
def libc() -> Any:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return lib


def check(result: int, what: str) -> None:
    """Raise OSError(errno, what: strerror) for a failed libc call."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if v is None else v.encode() for v in (src, target, fstype, data)]
    check(libc().mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {fstype or src} on {target}")


def unmount(path: Path | str) -> str | None:
    """Detach what is mounted on path; the problem met, or None (nothing mounted is fine)."""
    if libc().umount2(str(path).encode(), MNT_DETACH) == 0:
        return None
    err = ctypes.get_errno()
    return None if err in (errno.EINVAL, errno.ENOENT) else f"unmounting {path}: {os.strerror(err)}"


def setns(fd: int, nstype: int, what: str) -> None:
    check(libc().setns(fd, nstype), f"entering the node's {what} namespace")


def unshare(flags: int, what: str) -> None:
    check(libc().unshare(flags), f"unshare({what})")


def is_bound(path: Path) -> bool:
    """Something (a namespace file) is mounted on path: it is on another device than its
    directory."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def ensure_private(directory: Path) -> None:
    """Make directory a mount point with private propagation (a mount namespace may be bound
    only on such a mount: on a shared one it would reach into the namespace it holds)."""
    with _private_lock:
        if directory in _private_done and directory.is_dir():
            return
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        if libc().mount(None, str(directory).encode(), None, MS_PRIVATE, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
                check(-1, f"making {directory} private")
            mount(str(directory), str(directory), None, MS_BIND)
            mount(None, str(directory), None, MS_PRIVATE)
        _private_done.add(directory)


def release_private(directory: Path, keep: bool = False) -> None:
    """Undo ensure_private: the mount on directory comes off with everything mounted below it
    (a lazy unmount detaches the whole tree), then the directory unless keep."""
    while libc().umount2(str(directory).encode(), MNT_DETACH) == 0:
        pass  # bound once; a second bind (two holders racing) comes off as well
    with _private_lock:
        _private_done.discard(directory)
    if not keep:
        with contextlib.suppress(OSError):
            directory.rmdir()


def mounts_under(prefixes: Sequence[str]) -> list[str]:
    """Mount points (of the calling thread's mount namespace) below prefixes, deepest first."""
    with open("/proc/thread-self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    found = [p for p in points if any(p.startswith(x.rstrip("/") + "/") for x in prefixes)]
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def hold_namespaces(setup: Callable[[], None], holds: Mapping[str, Path]) -> None:
    """Run setup on a fresh thread (it unshares or enters namespaces there), then bind that
    thread's namespaces — holds maps 'mnt', 'uts', ... to files — so they outlive it."""
    for path in holds.values():
        path.touch(mode=0o400)
    ready, done = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def maker() -> None:
        try:
            setup()
            box["tid"] = threading.get_native_id()
        except BaseException as exc:
            box["error"] = exc
        ready.set()
        done.wait()  # the caller binds this thread's namespaces before it may end

    thread = threading.Thread(target=maker, name="tunlab-ns-maker", daemon=True)
    thread.start()
    ready.wait()
    try:
        if "error" in box:
            raise box["error"]
        for name, path in holds.items():
            mount(f"/proc/{box['tid']}/ns/{name}", str(path), None, MS_BIND)
    except BaseException:
        for path in holds.values():
            unmount(path)
        raise
    finally:
        done.set()
        thread.join()
