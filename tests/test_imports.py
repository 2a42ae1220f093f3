"""Every module meant for this OS imports (on Windows' CPython too: .ci/windows-cpython runs
this): a missing OS-specific name (errno.EBADFD once) shows here, naming the module."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest
import pytest_tunlab

import tunlab
from tests.support import UNDER_WINE, missing

# module trees made for some OSes only (everything else is for every OS)
ONLY_ON = {
    "tunlab.devices._linux": ("linux",),
    "tunlab.devices._bsd": ("linux", "darwin", "freebsd", "openbsd", "netbsd"),  # Linux: the doubles
    "tunlab.devices._darwin": ("linux", "darwin", "freebsd", "openbsd", "netbsd"),
}


def modules() -> list[str]:
    out = []
    for top in (tunlab, pytest_tunlab):
        out += [info.name for info in pkgutil.walk_packages(top.__path__, f"{top.__name__}.")]
    return sorted(out)


def meant_for_here(name: str) -> bool:
    here = next(
        (
            f
            for f in ("linux", "darwin", "freebsd", "openbsd", "netbsd", "win32")
            if sys.platform.startswith(f)
        ),
        "",
    )
    return all(not name.startswith(prefix) or here in oses for prefix, oses in ONLY_ON.items())


@pytest.mark.parametrize("name", [m for m in modules() if meant_for_here(m)])
def test_every_module_meant_for_this_os_imports(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if UNDER_WINE and exc.name in ("pydantic", "numpy"):
            pytest.skip(missing(exc.name))
        raise


def test_the_lazy_exports_load() -> None:
    """`from tunlab.relay import Relay` and friends: every lazily exported name resolves."""
    for package in ("tunlab", "tunlab.devices", "tunlab.relay", "tunlab.testing", "tunlab.topologies"):
        mod = importlib.import_module(package)
        for name in mod.__all__:
            try:
                getattr(mod, name)
            except ImportError as exc:
                if UNDER_WINE and "pydantic" in str(exc):
                    continue  # the wine gap: tests/support.py WINE_GAPS
                raise
