"""Files tunlab ships beside its code: the example labs (examples/) and the VM image recipes
(vm-images/). A wheel carries them in tunlab/_shipped/ (setup.py copies them in at build time);
a checkout or an editable install finds them at the repository's top level."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The folder of shipped `kind` files ("examples" or "vm-images")."""
    installed = PACKAGE / "_shipped" / kind
    if installed.is_dir():
        return installed
    return PACKAGE.parent / kind  # a checkout


def examples() -> dict[str, Path]:
    """Shipped example files by name (demo.yaml, test_gro.py, ...)."""
    folder = shipped_dir("examples")
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".py") and p.is_file()}


def example(name: str) -> Path | None:
    """A shipped example by its name, with or without .yaml (None: there is none)."""
    found = examples()
    return found.get(name) or found.get(f"{name}.yaml")
