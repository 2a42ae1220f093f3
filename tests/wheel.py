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
    """A fresh venv outside the checkout with the wheel installed in it (pip, no deps); its
    dependencies come from this venv's site-packages, named in a .pth file after its own (so
    `import tunlab` is the wheel's, and the console script is the venv's). The environment
    returned runs that venv: TUNLAB_PYTHON is its interpreter, PATH starts with its bin/."""
    if _installed:
        return _installed[0]
    venv = factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "zz-tunlab-test-deps.pth").write_text(ours + "\n")  # after the venv's own
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert (venv / "bin" / "tunlab").exists(), "the wheel installed no tunlab command"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    env["TUNLAB_PYTHON"] = str(python)
    env["TUNLAB_SITE"] = site
    for leak in ("TUNLAB_VM_RECIPES", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(leak, None)
    _installed.append(env)
    return env
