"""The documentation site builds strict (no broken link, no page left out, no undocumented
reference) and offline: no page loads a script, stylesheet, font or image from the network."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REMOTE_ASSET = re.compile(
    r"<script[^>]+src=\"https?://|<link[^>]+rel=\"stylesheet\"[^>]+href=\"https?://|<img[^>]+src=\"https?://"
    r"|@import url\(\"?https?://|url\(\"?https?://[^)]*\.(?:woff2?|ttf|otf)"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'tunlab[docs]'; make docs)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_the_site_builds_strict_with_every_public_module_documented(site: Path) -> None:
    from tests.structure.public_api import PUBLIC_MODULES

    pages = "\n".join(p.read_text() for p in (site / "api").glob("*.html"))
    for module in PUBLIC_MODULES:
        assert f'id="{module}"' in pages, f"{module} has no section in the API reference"
    assert "DeviceBuilder" in (site / "api" / "devices.html").read_text()


def test_no_page_fetches_anything_from_the_network(site: Path) -> None:
    found = []
    for path in site.rglob("*"):
        if path.suffix in (".html", ".css") and REMOTE_ASSET.search(path.read_text(errors="replace")):
            found.append(str(path.relative_to(site)))
    assert not found, f"pages that load remote assets: {found}"
