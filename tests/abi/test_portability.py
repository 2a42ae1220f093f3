"""Every errno, socket, fcntl, os, signal and select name used by code that runs on macOS or a
BSD exists there. Which names each OS has comes from its own headers (compiled with ziglang:
`-E -dM` for the macros, `-E` for the functions declared), with the rule CPython uses to expose
a name: a constant exists in the Python module exactly when its macro is defined
(Modules/errnomodule.c, socketmodule.c, fcntlmodule.c, posixmodule.c, signalmodule.c and
selectmodule.c add each one under #ifdef), a function when libc declares the C function it
wraps. A use that is not guarded (sys.platform, hasattr, getattr with a default, or a try that
catches AttributeError) fails the test with the module and line. Windows is covered by running
the suite on Windows' own CPython (.ci/windows-cpython)."""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.abi.probe import need_zig

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("errno", "socket", "fcntl", "os", "signal", "select")
TARGETS = {
    "darwin": "x86_64-macos",
    "freebsd": "x86_64-freebsd",
    "openbsd": "x86_64-openbsd",
    "netbsd": "x86_64-netbsd",
}
HEADERS = [
    "sys/types.h",
    "sys/socket.h",
    "sys/ioctl.h",
    "sys/stat.h",
    "sys/mman.h",
    "sys/uio.h",
    "sys/select.h",
    "errno.h",
    "fcntl.h",
    "signal.h",
    "unistd.h",
    "stdlib.h",
    "poll.h",
    "netinet/in.h",
    "netinet/tcp.h",
    "net/if.h",
]

# code that never runs on macOS or a BSD (Linux's kernel interfaces, Windows, labs and VMs)
LINUX_OR_WINDOWS_ONLY = (
    "tunlab/_linux/",
    "tunlab/devices/_linux/",
    "tunlab/devices/_windows/",
    "tunlab/_vm/",
    "tunlab/topologies/",
    "tunlab/_cli/",
    "tunlab/cluster/_simulation.py",  # hosts as network namespaces
)
# modules for one of the four only
ONE_OS = {
    "tunlab/devices/_darwin/": ("darwin",),
    "tunlab/devices/_bsd/freebsd.py": ("freebsd",),
    "tunlab/devices/_bsd/openbsd.py": ("openbsd",),
    "tunlab/devices/_bsd/netbsd.py": ("netbsd",),
}

# module.function -> the C function CPython needs from libc (None: POSIX, always there)
FUNCTIONS: dict[str, str | None] = {
    **dict.fromkeys(
        [
            "os.close",
            "os.open",
            "os.read",
            "os.write",
            "os.pipe",
            "os.getpid",
            "os.getppid",
            "os.fstat",
            "os.ftruncate",
            "os.strerror",
            "os.urandom",
            "os.fspath",
            "os._exit",
            "os.set_blocking",
            "os.get_blocking",
            "os.path",
            "os.environ",
            "os.name",
            "os.PathLike",
            "os.kill",
            "os.waitpid",
            "os.dup",
            "os.access",
            "os.unlink",
            "os.getuid",
            "os.geteuid",
            "socket.socket",
            "socket.socketpair",
            "socket.htons",
            "socket.htonl",
            "socket.ntohs",
            "socket.inet_pton",
            "socket.inet_ntop",
            "socket.error",
            "socket.timeout",
            "select.select",
            "signal.signal",
            "signal.getsignal",
            "signal.Signals",  # an enum the signal module builds from the constants it has
            "fcntl.ioctl",
            "fcntl.fcntl",
        ]
    ),
    "os.readv": "readv",
    "os.writev": "writev",
    "os.memfd_create": "memfd_create",
    "os.pipe2": "pipe2",
    "os.eventfd": "eventfd",
    "os.sched_getaffinity": "sched_getaffinity",
    "socket.if_nametoindex": "if_nametoindex",
    "socket.if_indextoname": "if_indextoname",
    "select.poll": "poll",
    "select.epoll": "epoll_create",
    "signal.pthread_kill": "pthread_kill",
}


@dataclass(frozen=True)
class Use:
    where: str  # path:line
    name: str  # module.NAME
    guarded: bool


class Finder(ast.NodeVisitor):
    """Attribute reads of the checked modules, each marked guarded or not."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.uses: list[Use] = []
        self.guards = 0

    @staticmethod
    def _is_guard(test: ast.AST) -> bool:
        text = ast.unparse(test)
        return bool(re.search(r"sys\.platform|hasattr\(|os\.name|IS_LINUX|\bLINUX\b|platform\.system", text))

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        guard = self._is_guard(node.test)
        self.guards += guard
        for child in [*node.body, *node.orelse]:
            self.visit(child)
        self.guards -= guard

    def visit_IfExp(self, node: ast.IfExp) -> None:
        guard = self._is_guard(node.test)
        self.guards += guard
        self.generic_visit(node)
        self.guards -= guard

    def visit_Try(self, node: ast.Try) -> None:
        catches = any(
            h.type is None or "AttributeError" in ast.unparse(h.type) or "Exception" in ast.unparse(h.type)
            for h in node.handlers
        )
        self.guards += catches
        for child in node.body:
            self.visit(child)
        self.guards -= catches
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in MODULES:
            self.uses.append(
                Use(f"{self.rel}:{node.lineno}", f"{node.value.id}.{node.attr}", self.guards > 0)
            )
        self.generic_visit(node)


def sources() -> list[tuple[str, tuple[str, ...]]]:
    """(path, the OSes it runs on) of every module that runs on macOS or a BSD."""
    out = []
    for path in sorted(p for d in ("tunlab", "plugins") for p in (ROOT / d).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(LINUX_OR_WINDOWS_ONLY):
            continue
        oses = next((v for k, v in ONE_OS.items() if rel.startswith(k)), tuple(TARGETS))
        out.append((rel, oses))
    return out


def uses() -> list[tuple[Use, tuple[str, ...]]]:
    out = []
    for rel, oses in sources():
        finder = Finder(rel)
        finder.visit(ast.parse((ROOT / rel).read_text(), rel))
        out += [(u, oses) for u in finder.uses]
    return out


@functools.cache
def headers(os_name: str, tmp: str) -> tuple[frozenset[str], str]:
    """(macro names defined, preprocessed text) of the OS's headers."""
    need_zig()
    work = Path(tmp)
    src = work / f"portability-{os_name}.c"
    src.write_text("".join(f"#include <{h}>\n" for h in HEADERS))
    env = {
        **os.environ,
        "ZIG_GLOBAL_CACHE_DIR": str(work / "zig-global"),
        "ZIG_LOCAL_CACHE_DIR": str(work / "zig-local"),
    }

    def cc(*flags: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ziglang", "cc", "-target", TARGETS[os_name], "-w", "-E", *flags, str(src)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    macros = frozenset(m.group(1) for m in re.finditer(r"^#define (\w+)", cc("-dM"), re.M))
    return macros, cc()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("portability"))


def missing_on(os_name: str, name: str, tmp: str) -> str | None:
    """Why name is absent from CPython on os_name, or None when it is there."""
    module, attr = name.split(".", 1)
    macros, text = headers(os_name, tmp)
    if name in FUNCTIONS:
        c_func = FUNCTIONS[name]
        if c_func is None or re.search(rf"\b{c_func}\s*\(", text):
            return None
        return f"{os_name}'s libc declares no {c_func}()"
    if attr.isupper() or (attr.startswith(("SIG", "E")) and attr[1:2].isupper()):
        return None if attr in macros else f"{os_name}'s headers define no {attr}"
    return f"{name} is neither a constant nor in FUNCTIONS: add the C function CPython needs for it"


def test_every_os_name_used_off_linux_exists_there(tmp: str) -> None:
    problems = []
    for use, oses in uses():
        if use.guarded:
            continue
        for os_name in oses:
            why = missing_on(os_name, use.name, tmp)
            if why is not None:
                problems.append(f"{use.where}: {use.name}: {why} (guard it, or move it into Linux-only code)")
    assert not problems, "names that do not exist where the code runs:\n" + "\n".join(sorted(set(problems)))


def test_the_check_catches_a_linux_only_name(tmp: str) -> None:
    """What it is for: errno.EBADFD (Linux only) and os.memfd_create (no macOS/OpenBSD libc
    function) are caught; the same names guarded are not."""
    assert missing_on("darwin", "errno.EBADFD", tmp) is not None
    assert missing_on("openbsd", "os.memfd_create", tmp) is not None
    assert missing_on("darwin", "errno.EBADF", tmp) is None
    finder = Finder("sample.py")
    finder.visit(
        ast.parse(
            "import errno, os\nA = errno.EBADFD\nif hasattr(os, 'memfd_create'):\n    os.memfd_create('x')\n"
        )
    )
    assert [(u.name, u.guarded) for u in finder.uses] == [("errno.EBADFD", False), ("os.memfd_create", True)]
