"""The public surface of tunlab, as text: every name in the public modules' `__all__`, with its
kind and signature, and the public methods and properties of public classes.

tests/structure/test_public_api.py compares it with the checked-in snapshot
(tests/structure/public_api.txt), so an API change is a deliberate diff. After a deliberate
change: `python -m tests.structure.public_api > tests/structure/public_api.txt`.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

# the modules a user may import; every other module is internal (its name or a parent's starts
# with an underscore: docs/development.md, "Public and internal")
PUBLIC_MODULES = (
    "tunlab",
    "tunlab.cluster",
    "tunlab.devices",
    "tunlab.devices.offload",
    "tunlab.errors",
    "tunlab.netns",
    "tunlab.packets",
    "tunlab.relay",
    "tunlab.relay.impair",
    "tunlab.testing",
    "tunlab.topologies",
    "tunlab.traffic",
    "pytest_tunlab.plugin",
)

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", text)


def _members(cls: type) -> Iterator[str]:
    """Public methods, properties and class attributes a class defines or inherits from tunlab."""
    if issubclass(cls, enum.Enum):
        for member in cls:
            yield f"    {member.name} = {member.value!r}"
        return
    pydantic_fields = getattr(cls, "model_fields", None)
    if isinstance(pydantic_fields, dict):
        for name, info in pydantic_fields.items():
            yield f"    field {name}: {_ADDRESS.sub('', str(info.annotation))}"
    for name in sorted(dir(cls)):
        if name.startswith("_") or (pydantic_fields is not None and name.startswith("model_")):
            continue
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None or not owner.__module__.startswith(("tunlab", "pytest_tunlab")):
            continue
        value = vars(owner)[name]
        if isinstance(value, property):
            yield f"    property {name}"
        elif isinstance(value, (classmethod, staticmethod)):
            yield f"    {type(value).__name__} {name}{_signature(getattr(cls, name))}"
        elif inspect.isfunction(value):
            yield f"    def {name}{_signature(value)}"
        elif pydantic_fields is None or name not in pydantic_fields:
            yield f"    attribute {name}"


def _describe(name: str, obj: Any) -> Iterator[str]:
    if inspect.isclass(obj):
        bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
        yield f"  class {name}({bases})"
        yield from _members(obj)
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
        yield f"  def {name}{_signature(obj)}"
    elif inspect.ismodule(obj):
        yield f"  module {name}"
    elif isinstance(obj, (int, str, float, bytes)):
        yield f"  {name} = {obj!r}"
    else:
        yield f"  {name}: {type(obj).__name__}"


def surface() -> str:
    lines: list[str] = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        if names is None:
            raise AssertionError(f"{module_name} has no __all__: a public module lists its names")
        lines.append(f"{module_name}")
        for name in sorted(names):
            lines.extend(_describe(name, getattr(module, name)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(surface(), end="")
