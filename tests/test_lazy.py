"""Lazy package exports say why a name could not be loaded (a missing errno name once showed
only as "cannot import name 'Relay'")."""

from __future__ import annotations

import sys
import types

import pytest

from tunlab._lazy import lazy


def test_a_failing_module_is_named_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tunlab_lazy_probe_broken", None)  # its import fails
    package = types.ModuleType("tunlab_lazy_probe")
    package.__getattr__, package.__dir__ = lazy("tunlab_lazy_probe", {"Thing": "tunlab_lazy_probe_broken"})  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "tunlab_lazy_probe", package)
    with pytest.raises(
        ImportError,
        match=r"tunlab_lazy_probe.Thing could not be loaded: importing tunlab_lazy_probe_broken failed",
    ):
        from tunlab_lazy_probe import Thing  # type: ignore[import-not-found]  # noqa: F401


def test_an_attribute_error_inside_the_module_is_not_turned_into_cannot_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "lazyprobe_mod.py").write_text("import errno\nGONE = errno.NO_SUCH_ERRNO_NAME\n")
    (tmp_path / "lazyprobe_pkg.py").write_text(
        "from tunlab._lazy import lazy\n__getattr__, __dir__ = lazy(__name__, {'GONE': 'lazyprobe_mod'})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ImportError, match=r"AttributeError: module 'errno' has no attribute 'NO_SUCH_ERRNO_NAME'"
    ):
        from lazyprobe_pkg import GONE  # type: ignore[import-not-found]  # noqa: F401
