"""Small units: no function or method in tunlab/ or plugins/ is longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 80


def long_functions() -> list[str]:
    out = []
    for path in sorted(p for d in ("tunlab", "plugins") for p in (ROOT / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LIMIT:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    found = long_functions()
    assert not found, "split these:\n" + "\n".join(found)
