"""Every code block in README.md and docs/ runs as written from the installed wheel, outside
the checkout (tests/docs/sybil_conftest.py says how each kind of block is run). Blocks that
cannot run here are marked with their reason, and counted."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.wheel import ROOT, build_wheel, install_wheel

pytestmark = pytest.mark.root
SKIPPED = re.compile(r"^(\S+)::line:(\d+),column:\d+ SKIPPED \((.*)\)")


def test_every_documented_block_runs_from_the_wheel(
    needs_root: None, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    env = install_wheel(build_wheel(tmp_path_factory), tmp_path_factory)
    run = tmp_path_factory.mktemp("docs-run")
    shutil.copy(ROOT / "README.md", run / "README.md")
    shutil.copytree(ROOT / "docs", run / "docs", ignore=shutil.ignore_patterns("api", "hooks"))
    shutil.copy(Path(__file__).with_name("sybil_conftest.py"), run / "conftest.py")
    wrote = subprocess.run(
        ["tunlab", "example", "--all", "-o", "examples"],  # the venv's console script
        cwd=run, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert wrote.returncode == 0, wrote
    done = subprocess.run(
        [env["TUNLAB_PYTHON"], "-m", "pytest", "-v", "-p", "no:cacheprovider", "README.md", "docs"],
        cwd=run, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    skipped = [m.groups() for line in done.stdout.splitlines() if (m := SKIPPED.match(line))]
    with capsys.disabled():
        print(f"\ndocumentation blocks: {passed} ran as written, {len(skipped)} marked as not runnable here:")
        for path, line, reason in skipped:
            print(f"  {path}:{line}: {reason}")
    assert passed >= 20, summary
