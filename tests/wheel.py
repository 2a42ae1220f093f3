"""The wheel as a user gets it: built from a copy of the files git knows (ignored ones left out;
an in-tree build would leave build/ behind, and a stale build/ could put removed modules into
the next wheel), once per session, and installed outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_built: list[Path] = []
_installed: list[dict[str, str]] = []


def build_wheel(factory: pytest.TempPathFactory) -> Path:
    """tunlab's wheel (offline: no build isolation, setuptools from the dev extra)."""
    if _built:
        return _built[0]
    source, out = factory.mktemp("source"), factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    )  # fmt: skip
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (built,) = out.glob("tunlab-*.whl")
    _built.append(built)
    return built


def install_wheel(wheel: Path, factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose `tunlab` is the installed wheel (its dependencies from this venv)."""
    if _installed:
        return _installed[0]
    target = factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    scripts = target / "bin"  # pip --target puts the `tunlab` console script here
    assert (scripts / "tunlab").exists(), "the wheel installed no tunlab command"
    path = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(target), "PATH": path, "COLUMNS": "200"}
    env.pop("TUNLAB_VM_RECIPES", None)
    _installed.append(env)
    return env
