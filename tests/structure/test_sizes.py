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


def test_the_device_backend_interface_is_small() -> None:
    """DeviceBackend keeps frames, readiness and lifetime (at most 16 public members);
    configuration is behind its Configurator, optional I/O behind protocols of its own."""
    from tunlab.devices._backend import DeviceBackend

    members = {n for n in dir(DeviceBackend) if not n.startswith("_")}
    members |= {n for n in DeviceBackend.__init__.__code__.co_names if not n.startswith("_")}
    members &= set(dir(DeviceBackend)) | {"layer", "capabilities", "frame_format", "config"}
    assert {"layer", "capabilities", "frame_format", "config", "recv_into", "send", "close"} <= members
    assert len(members) <= 16, sorted(members)
