"""Copied as conftest.py next to copies of README.md and docs/*.md, outside the checkout, where
the installed wheel is the only tunlab: every code block of the documentation is run as written
(sybil collects them). python blocks run in one namespace per page, in order (a block that
defines pytest tests is run by pytest, with tunlab's plugin); sh blocks run line by line, each
line an argv list (no shell), and must exit 0; yaml blocks that are whole topologies are
validated and brought up and down (skipped, saying why, where a node kind cannot run here). A block that cannot
run here carries `<!-- skip: next "why" -->` above it; pytest -rs lists those with the reason."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sybil import Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

HERE = Path(__file__).resolve().parent


def _python(example: Example) -> None:
    source = example.parsed
    where = f"{example.path}:{example.line}"
    if "def test_" in source and "import pytest" in source:
        test_file = HERE / f"test_block_{Path(example.path).stem}_{example.line}.py"
        test_file.write_text(source)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:sybil", str(test_file)],
            cwd=HERE, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{where}: the block's tests failed:\n{done.stdout}\n{done.stderr}"
        return
    exec(compile(source, where, "exec"), example.namespace)


def _sh(example: Example) -> None:
    for line in example.parsed.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        done = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"{example.path}:{example.line}: `{line.strip()}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )


def _yaml(example: Example) -> None:
    from tunlab.topologies import Lab, load_text

    data: Any = yaml.safe_load(example.parsed.replace("{{ mtu }}", "1500"))
    assert data is not None, "an empty block"
    if not (isinstance(data, dict) and "name" in data and "nodes" in data):
        return  # a piece of a topology, shown in prose: it parses
    topo = load_text(example.parsed, "yaml", f"{example.path}:{example.line}")
    from tunlab.errors import LabError
    from tunlab.topologies._drivers import driver_for

    for node in topo.resolved_nodes().values():
        try:
            driver_for(node.kind).check_available()
        except LabError as exc:  # validated; it cannot come up on this machine
            pytest.skip(f"validated only: {exc}")
    lab = Lab(topo, unique=True).up()  # every kind: namespaces, containers, VMs
    assert lab.down() == []


pytest_collect_file = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=_python),
        CodeBlockParser(language="sh", evaluator=_sh),
        CodeBlockParser(language="yaml", evaluator=_yaml),
        SkipParser(),
    ],
    patterns=["*.md"],
).pytest()


@pytest.fixture(scope="session", autouse=True)
def no_lab_left() -> Any:
    """A block that failed half-way may leave a lab up: take down those this session made."""
    from tunlab.topologies._operations import stop_lab
    from tunlab.topologies._state import all_labs

    before = {lab.name for lab in all_labs()}
    yield
    for lab in all_labs():
        if lab.name not in before:
            stop_lab(lab.name)
