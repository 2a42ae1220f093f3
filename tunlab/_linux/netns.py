"""Linux network namespaces: create them, and open sockets or run programs inside them.

setns(2) with CLONE_NEWNET changes only the calling thread, so work that must happen "inside" a
namespace (opening /dev/net/tun, creating a netlink socket, spawning a process) runs in a short
worker thread that joins the namespace first. Nothing here forks the Python process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tunlab.errors import NamespaceNotFoundError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

__all__ = [
    "NETNS_RUN_DIR",
    "NetNamespace",
    "call_in_netns",
    "current_netns_inode",
    "list_named_netns",
]

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
_IFNAMSIZ_NETNS_NAME = 255

T = TypeVar("T")

_libc: ctypes.CDLL | None = None
_run_dir_lock = threading.Lock()


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    if _lib().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            raise PermissionError(err, "entering a network namespace needs CAP_SYS_ADMIN: run as root")
        _raise_errno("setns")


def current_netns_inode() -> tuple[int, int]:
    """(device, inode) of the calling thread's network namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def run_in_thread(fn: Callable[[], T], name: str = "tunlab-worker") -> T:
    """Run fn() on a fresh thread and wait: its result, or its exception raised here."""
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=worker, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def call_in_netns(ns_fd: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(*args) in a worker thread that first joins the namespace behind ns_fd."""
    st = os.fstat(ns_fd)
    if (st.st_dev, st.st_ino) == current_netns_inode():
        return fn(*args, **kwargs)

    def inside() -> T:
        _setns(ns_fd)
        return fn(*args, **kwargs)

    return run_in_thread(inside, "tunlab-netns")


def list_named_netns(run_dir: str = NETNS_RUN_DIR) -> list[str]:
    """Names of the namespaces bind-mounted under /run/netns (what `ip netns list` shows)."""
    try:
        return sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return []


def _ensure_run_dir(run_dir: str) -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so bind mounts propagate."""
    with _run_dir_lock:
        os.makedirs(run_dir, mode=0o755, exist_ok=True)
        libc = _lib()
        bound = False
        while libc.mount(b"", run_dir.encode(), b"none", _MS_SHARED | _MS_REC, None) != 0:
            if bound or ctypes.get_errno() != errno.EINVAL:
                _raise_errno(f"making {run_dir} a shared mount")
            if libc.mount(run_dir.encode(), run_dir.encode(), b"none", _MS_BIND | _MS_REC, None):
                _raise_errno(f"bind-mounting {run_dir}")
            bound = True


def _validate_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or len(name) > _IFNAMSIZ_NETNS_NAME:
        raise ValueError(f"netns name {name!r} is invalid: use 1-255 characters without '/'")


class NetNamespace:
    """A network namespace: named (/run/netns/NAME), a path (/proc/PID/ns/net) or an open fd."""

    def __init__(self, path: str, *, name: str | None = None, fd: int | None = None) -> None:
        self.path = path
        self.name = name
        self._fd = fd

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        run_dir: str = NETNS_RUN_DIR,
        sysctls: dict[str, str] | None = None,
        setup: Callable[[], None] | None = None,
    ) -> NetNamespace:
        """Create a new named namespace (like `ip netns add NAME`), with loopback up.

        sysctls (net.* keys) are written, and setup() is called, by the creating thread inside
        the new namespace before anything else exists in it (no extra thread per step).
        """
        _validate_name(name)
        _ensure_run_dir(run_dir)
        path = os.path.join(run_dir, name)
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST, f"network namespace {name!r} already exists ({path})"
            ) from None

        def make() -> int:
            libc = _lib()
            if libc.unshare(CLONE_NEWNET) != 0:
                _raise_errno("unshare(CLONE_NEWNET)")
            if libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", _MS_BIND, None):
                _raise_errno(f"bind-mounting the new namespace on {path}")
            _loopback_up()
            write_sysctls_here(sysctls or {})
            if setup is not None:
                setup()
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

        try:
            fd = run_in_thread(make, "tunlab-netns-create")
        except BaseException:
            with contextlib.suppress(OSError):
                _lib().umount2(path.encode(), _MNT_DETACH)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return cls(path, name=name, fd=fd)

    @classmethod
    def open(cls, name_or_path: str | os.PathLike[str]) -> NetNamespace:
        """An existing namespace by name (under /run/netns) or by path."""
        spec = os.fspath(name_or_path)
        path = spec if "/" in spec else os.path.join(NETNS_RUN_DIR, spec)
        name = None if "/" in spec else spec
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            hint = "check the path"
            if name:
                hint = f"create it first (NetNamespace.create({spec!r}) or `ip netns add {spec}`)"
            raise NamespaceNotFoundError(f"network namespace {spec!r} does not exist: {hint}") from None
        ns = cls(path, name=name, fd=fd)
        try:
            ns._check_is_netns()
        except Exception:
            ns.close()
            raise
        return ns

    @classmethod
    def from_pid(cls, pid: int) -> NetNamespace:
        """The namespace a process lives in (a container's, for example)."""
        return cls.open(f"/proc/{pid}/ns/net")

    @classmethod
    def from_fd(cls, fd: int) -> NetNamespace:
        """Wrap (and take ownership of) an open namespace fd."""
        return cls(f"/proc/self/fd/{fd}", fd=fd)

    @classmethod
    def current(cls) -> NetNamespace:
        """The calling thread's namespace."""
        return cls.open("/proc/thread-self/ns/net")

    def _check_is_netns(self) -> None:
        import fcntl

        try:
            nstype = fcntl.ioctl(self.fd, _NS_GET_NSTYPE)
        except OSError:
            nstype = -1
        if nstype != CLONE_NEWNET:
            raise NamespaceNotFoundError(f"{self.path!r} is not a network namespace")

    # ---- identity ---------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        """The namespace's fd (open until close())."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    @property
    def inode(self) -> tuple[int, int]:
        """(device, inode) of the namespace: equal for the same namespace however opened."""
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    def __repr__(self) -> str:
        return f"NetNamespace({self.name or self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetNamespace) and self.inode == other.inode

    def __hash__(self) -> int:
        return hash(self.inode)

    # ---- doing things inside ----------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) on a thread inside this namespace and return its result."""
        return call_in_netns(self.fd, fn, *args, **kwargs)

    def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
    ) -> socket.socket:
        """A socket that lives in this namespace (usable from any thread)."""
        return self.call(socket.socket, family, type | socket.SOCK_CLOEXEC, proto)

    def iproute(self) -> IPRoute:
        """A pyroute2 IPRoute whose netlink socket lives in this namespace (use from one thread)."""
        from pyroute2 import IPRoute

        sock = self.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE == 0
        return IPRoute(fileno=sock.detach())

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside this namespace (the child inherits the worker thread's namespace)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments, not a string")
        if kwargs.get("shell"):
            raise ValueError("shell=True is not allowed: pass an argv list")
        return self.call(subprocess.Popen, list(argv), **kwargs)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        check: bool = False,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run argv inside this namespace to completion, capturing stdout and stderr."""
        proc = self.popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        out, err = finish(proc, input, timeout)
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    def write_sysctl(self, key: str, value: str | int) -> None:
        """Set a net.* sysctl of this namespace (key like 'net.ipv4.ip_forward')."""
        path = sysctl_path(key)

        def write() -> None:
            with open(path, "w") as f:
                f.write(str(value))

        self.call(write)

    def read_sysctl(self, key: str) -> str:
        """A sysctl's value inside the namespace ("net.ipv4.ip_forward" -> "1")."""
        path = sysctl_path(key)

        def read() -> str:
            with open(path) as f:
                return f.read().strip()

        return self.call(read)

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close this handle's fd (the namespace stays; delete() removes a named one)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        """Unmount and remove a named namespace; it vanishes once nothing else holds it."""
        self.close()
        if self.name is None:
            raise ValueError("only named namespaces can be deleted; close() releases others")
        if _lib().umount2(self.path.encode(), _MNT_DETACH) != 0 and ctypes.get_errno() not in (
            errno.EINVAL,
            errno.ENOENT,
        ):
            _raise_errno(f"unmounting {self.path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Temporarily move the *calling thread* into this namespace (restored on exit)."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            yield
        finally:
            try:
                _setns(back)
            finally:
                os.close(back)


def finish(proc: subprocess.Popen[Any], input: bytes | None, timeout: float | None) -> tuple[bytes, bytes]:
    """communicate() that kills the process instead of leaving it behind: after a timeout, and
    when the wait itself is interrupted (Ctrl-C, SIGTERM during a lab's bring-up)."""
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return out or b"", err or b""


def sysctl_path(key: str) -> str:
    """/proc/sys path of a net.* key (ValueError for keys that are not per-namespace)."""
    parts = key.replace("/", ".").split(".")
    if parts[0] != "net" or any(p in ("", "..") for p in parts):
        raise ValueError(f"sysctl {key!r}: only net.* keys are per-namespace")
    return "/proc/sys/" + "/".join(parts)


def write_sysctls_here(values: Mapping[str, object]) -> None:
    """Write net.* sysctls in the calling thread's namespace."""
    for key, value in values.items():
        with open(sysctl_path(key), "w") as f:
            f.write(str(value))


def _loopback_up() -> None:
    """Bring 'lo' up in the calling thread's namespace (SIOCSIFFLAGS; no netlink round trip)."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s.fileno(), 0x8913, req))[1]
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH22x", b"lo", flags | 0x1))
