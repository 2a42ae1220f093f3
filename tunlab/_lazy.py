"""Lazy package exports: `import tunlab` stays cheap; a name loads its module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for a package whose public names live in submodules.

    exports maps each name to the module that defines it; a module is imported only when one of
    its names is first looked up, and the value is then cached in the package.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module), name)
        except Exception as exc:
            # `from package import name` turns an AttributeError from here into "cannot import
            # name", hiding why: say which module failed and how
            raise ImportError(
                f"{package}.{name} could not be loaded: importing {module} failed with "
                f"{type(exc).__name__}: {exc}",
                name=module,
            ) from exc
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
