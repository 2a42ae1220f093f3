"""The public API is deliberate: the public modules' names and signatures match the checked-in
snapshot, every public name (and every public method of a public class) has a docstring, and
every other module is marked internal by a leading underscore in its path."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from tests.structure.public_api import PUBLIC_MODULES, surface

SNAPSHOT = Path(__file__).with_name("public_api.txt")


def test_the_public_surface_matches_the_snapshot() -> None:
    now = surface()
    assert now == SNAPSHOT.read_text(), (
        "the public API changed; if that is deliberate, refresh the snapshot: "
        "python -m tests.structure.public_api > tests/structure/public_api.txt"
    )


def _undocumented() -> list[str]:
    out = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            out.append(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not inspect.getdoc(obj):
                out.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if attr.startswith("_") or not (inspect.isfunction(func) or isinstance(value, property)):
                        continue
                    if not (getattr(func, "__doc__", None) or "").strip():
                        out.append(f"{module_name}.{name}.{attr}")
    return out


def test_every_public_name_has_a_docstring() -> None:
    missing = _undocumented()
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_every_other_module_is_marked_internal() -> None:
    """A module is public when listed in PUBLIC_MODULES (or is a public package's __init__);
    every other one has a leading underscore in its own name or a parent package's."""
    unmarked = []
    for top in ("tunlab", "pytest_tunlab"):
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, f"{top}."):
            name = info.name
            if name in PUBLIC_MODULES or any(part.startswith("_") for part in name.split(".")[1:]):
                continue
            unmarked.append(name)
    assert not unmarked, "modules neither public nor marked internal:\n" + "\n".join(unmarked)
