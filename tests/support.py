"""Helpers shared by the test modules (not fixtures: those live in conftest.py)."""

from __future__ import annotations

import itertools
import os
import select
import sys
import time
from typing import Any

IS_LINUX = sys.platform.startswith("linux")
IS_ROOT = IS_LINUX and os.geteuid() == 0
HAS_TUN = os.path.exists("/dev/net/tun")

_counter = itertools.count()

# set by .ci/windows-cpython: the suite runs on Windows' own CPython under wine, where a few
# things the project uses cannot load; tests that need them skip saying which wine gap it is
UNDER_WINE = os.environ.get("TUNLAB_WINE") == "1"
WINE_GAPS = {
    "numpy": "numpy does not load under wine 8 (ucrtbase.crealf is unimplemented)",
    "pydantic": "pydantic-core's DLL does not load under wine 8",
}


def node_python() -> str:
    """A Python interpreter that a lab node can see: this one, unless it lives under a directory
    a node gets its own copy of (/tmp, /run — a checkout or venv under /tmp is invisible
    inside nodes), then the interpreter it was made from. For stdlib-only scripts in nodes."""
    private = ("/tmp/", "/run/")
    for candidate in (sys.executable, os.path.realpath(getattr(sys, "_base_executable", sys.executable))):
        if not os.path.realpath(candidate).startswith(private) and not candidate.startswith(private):
            return candidate
    return "python3"


NOBODY = 65534


def cli(*argv: str) -> tuple[int, str]:
    """Run the tunlab CLI in this process: (exit code, everything it printed). Its consoles
    write to a buffer of their own (they may hold a stream an earlier capture left them)."""
    import contextlib
    import io
    import signal

    from tunlab._cli import main as cli_module

    out = io.StringIO()
    code = 0
    console, err = cli_module.console.file, cli_module.err_console.file
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # `up` installs its own
    cli_module.console.file = cli_module.err_console.file = out
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            cli_module.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        cli_module.console.file, cli_module.err_console.file = console, err
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return code, out.getvalue()


def python_for_nobody(env: dict[str, str], module: str = "tunlab") -> str:
    """An interpreter that user 'nobody' can run and import `module` with (a checkout or venv
    under a 0700 directory is out of its reach); skips the test when there is none."""
    import subprocess

    import pytest

    for python in ("/usr/bin/python3", sys.executable):
        try:
            probe = subprocess.run(
                [python, "-c", f"import {module}"], capture_output=True, user=NOBODY, env=env, timeout=60
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return python
    reason = f"no Python interpreter that user 'nobody' can run with this checkout (import {module})"
    raise pytest.skip.Exception(reason)


def missing(package: str) -> str:
    """Why a package a test needs is not there: the wine gap, or how to install it."""
    if UNDER_WINE and package in WINE_GAPS:
        return f"{WINE_GAPS[package]}: the Windows-CPython run leaves {package} out"
    return f"{package} is not installed (it is in tunlab's dev extras)"


def unique_name(prefix: str = "tlt") -> str:
    """A namespace name no other test, worker or run uses at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    return f"{prefix}-{worker}-{os.getpid()}-{next(_counter)}"


def require_tool(name: str) -> None:
    """Skip the calling test, with the reason, when a command-line tool is missing."""
    import shutil

    import pytest

    if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}"):
        pytest.skip(f"{name} is not installed (make test installs it on Debian/Ubuntu)")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def link_info(ns: Any, ifname: str) -> dict[str, Any]:
    """What netlink itself says about an interface (for round-trip checks)."""
    with ns.iproute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return {}
        msg = ipr.link("get", index=found[0])[0]
        info = msg.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        addrs = sorted(
            f"{a.get_attr('IFA_LOCAL') or a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=found[0])
        )
        return {
            "index": msg["index"],
            "flags": msg["flags"],
            "mtu": msg.get_attr("IFLA_MTU"),
            "txqlen": msg.get_attr("IFLA_TXQLEN"),
            "mac": msg.get_attr("IFLA_ADDRESS"),
            "addresses": addrs,
            "tun": dict(data["attrs"]) if data else {},
        }


def link_names(ns: Any) -> set[str]:
    with ns.iproute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def read_until(dev: Any, match: Any, timeout: float = 5.0) -> bytes:
    """Read frames from a device until match(frame) is true; fail after timeout."""
    deadline = time.monotonic() + timeout
    fd = dev.fileno()
    seen = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching frame within {timeout} s ({seen} others seen)")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            frame = dev.recv()
            if match(frame):
                return frame
            seen += 1


def udp_to(port: int):
    """A frame matcher: a UDP packet to this port."""
    from tunlab import packets

    def match(frame: bytes) -> bool:
        try:
            return packets.parse_udp(frame).dport == port
        except ValueError:
            return False

    return match


def skip_module_unless(condition: bool, reason: str) -> None:
    """Skip the calling module with the reason, or, where a CI job says these tests must run
    (TUNLAB_NATIVE_TESTS=required), fail: a job that skipped everything would pass silently."""
    import pytest

    if condition:
        return
    if os.environ.get("TUNLAB_NATIVE_TESTS") == "required":
        pytest.fail(f"TUNLAB_NATIVE_TESTS=required, but: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def fd_snapshot(times: int = 3, gap: float = 0.05) -> tuple[set[str], set[str]]:
    """(fds open in every one of a few looks, fds open in any of them). Background threads (a
    lab's holder, relays) open and close files now and then: a leak is an fd that stays."""
    looks = []
    for i in range(times):
        if i:
            time.sleep(gap)
        looks.append(set(os.listdir("/proc/self/fd")))
    return set.intersection(*looks), set.union(*looks)


def leaked_fds(seen_before: set[str]) -> set[str]:
    """Fds that are open now, stay open, and were never seen before."""
    stays, _ = fd_snapshot()
    return stays - seen_before
