"""Values from an OS's own headers, on Linux: a C file of constants, sizeof and offsetof
compiled for the target with ziglang (nothing is run for the target), read back from the
object file's bytes (abi-from-headers.md)."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

MAGIC = (0x54554E4C41424931, 0x50524F4245535421)  # "TUNLABI1" "PROBEST!"


def need_zig() -> None:
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("the ziglang package is not installed (it is in tunlab's dev extras)")


def _item(expr: str) -> str:
    """A plain macro name is wrapped in #ifdef (undefined reads as 'not defined')."""
    if expr.isidentifier():
        return f"#ifdef {expr}\n    {{1, (uint64_t)({expr})}},\n#else\n    {{0, 0}},\n#endif\n"
    return f"    {{1, (uint64_t)({expr})}},\n"


def _source(headers: list[str], prelude: str = "") -> str:
    src = "".join(f"#include <{h}>\n" for h in headers)
    return src + "#include <stdint.h>\n#include <stddef.h>\n" + prelude


def compile_object(target: str, src: str, workdir: Path, tag: str = "probe") -> bytes:
    """The object file's bytes of C source src compiled for target (nothing is run)."""
    need_zig()
    c = workdir / f"{tag}-{target}.c"
    obj = workdir / f"{tag}-{target}.o"
    c.write_text(src)
    env = {
        **os.environ,
        "ZIG_GLOBAL_CACHE_DIR": str(workdir / "zig-global"),
        "ZIG_LOCAL_CACHE_DIR": str(workdir / "zig-local"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            "-target",
            target,
            "-g0",
            "-O0",
            "-w",
            "-c",
            str(c),
            "-o",
            str(obj),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"compiling the {target} probe failed:\n{done.stderr[-3000:]}")
    return obj.read_bytes()


def find_tagged(data: bytes, magic: tuple[int, int], size: int) -> bytes:
    """The size bytes after a 16-byte magic in an object file (either byte order)."""
    for order in ("<", ">"):
        at = data.find(struct.pack(f"{order}QQ", *magic))
        if at >= 0:
            return data[at + 16 : at + 16 + size]
    raise AssertionError("the tagged data is not in the object file")


def compile_probe(target: str, headers: list[str], items: dict[str, str], workdir: Path,
                  prelude: str = "") -> dict[str, int | None]:  # fmt: skip
    """{label: value, or None where the macro is not defined} for target ('x86_64-macos')."""
    src = _source(headers, prelude)
    src += "struct tl_item { uint64_t defined; uint64_t value; };\n"
    src += (
        "__attribute__((used)) const struct { uint64_t magic[2]; uint64_t count; "
        f"struct tl_item items[{len(items)}]; }} tunlab_probe = {{\n"
        f"  {{0x{MAGIC[0]:016x}ULL, 0x{MAGIC[1]:016x}ULL}}, {len(items)}, {{\n"
    )
    src += "".join(_item(expr) for expr in items.values()) + "  }\n};\n"
    data = compile_object(target, src, workdir)
    for order in ("<", ">"):
        at = data.find(struct.pack(f"{order}QQ", *MAGIC))
        if at >= 0:
            count = struct.unpack_from(f"{order}Q", data, at + 16)[0]
            pairs = struct.unpack_from(f"{order}{2 * count}Q", data, at + 24)
            values = [pairs[i + 1] if pairs[i] else None for i in range(0, 2 * count, 2)]
            return dict(zip(items, values, strict=True))
    raise AssertionError(f"no probe data in the {target} object file")
