"""Plug-in registries found by looking: every module of a package that defines a subclass of
a base class (with its key set) contributes one instance, so adding a node kind or a link type
is adding one module."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Instances of `base`'s subclasses from the modules of a package, keyed and ordered."""

    def __init__(
        self,
        package: str,
        path: Iterable[str],
        base: type[Any],  # an abstract class: mypy would refuse type[T] for it
        key: Callable[[type[T]], str | None],
        order: Callable[[T], tuple[int, str]],
        helpers: frozenset[str] = frozenset(),
    ) -> None:
        self._package, self._path = package, list(path)
        self._base, self._key, self._order, self._helpers = base, key, order, helpers
        self._found: dict[str, T] | None = None
        self._lock = threading.Lock()

    def _discover(self) -> dict[str, T]:
        found: dict[str, T] = {}
        for info in pkgutil.iter_modules(self._path):
            if info.name in self._helpers or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{self._package}.{info.name}")
            for value in vars(module).values():
                if not (isinstance(value, type) and value.__module__ == module.__name__):
                    continue
                if issubclass(value, self._base) and value is not self._base:
                    name = self._key(value)
                    if name:
                        found[name] = value()
        return dict(sorted(found.items(), key=lambda kv: self._order(kv[1])))

    def all(self) -> dict[str, T]:
        """Every entry by key, in order (modules are imported on the first call)."""
        if self._found is None:
            with self._lock:
                if self._found is None:
                    self._found = self._discover()
        return self._found
