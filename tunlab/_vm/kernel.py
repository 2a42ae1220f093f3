"""A Debian kernel for a guest: the uncompressed vmlinux and the modules a lab needs.

Booting the ELF directly (PVH) skips the in-guest XZ decompression, which costs seconds
under TCG. Module dependencies come from each module's own .modinfo (the package ships no
modules.dep), so no depmod is needed on the host.
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

ELF = b"\x7fELF"
XZ = b"\xfd7zXZ\x00"
GZIP = b"\x1f\x8b\x08"


def vmlinux_from_bzimage(data: bytes) -> bytes:
    """The ELF kernel inside a bzImage (XZ- or gzip-compressed payload); ValueError if none."""
    if data.startswith(ELF):
        return data
    for magic, decompress in ((XZ, _unxz), (GZIP, _gunzip)):
        start = data.find(magic)
        while start >= 0:
            try:
                out = decompress(data[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                out = b""
            if out.startswith(ELF):
                return out
            start = data.find(magic, start + 1)
    raise ValueError("no XZ or gzip payload holding an ELF kernel in this bzImage")


def _unxz(data: bytes) -> bytes:
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return dec.decompress(data)


def _gunzip(data: bytes) -> bytes:
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return dec.decompress(data)


def module_index(root: Path) -> dict[str, Path]:
    """{module name: path} for every .ko under lib/modules/<version>/ (names use '_')."""
    return {p.name.removesuffix(".ko").replace("-", "_"): p for p in root.rglob("*.ko")}


def depends(path: Path) -> list[str]:
    """The modules a .ko needs first (its modinfo `depends=`)."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)", path.read_bytes())
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def closure(wanted: Iterable[str], index: dict[str, Path], builtin: set[str]) -> list[str]:
    """Wanted modules and what they depend on, each after its dependencies; builtins skipped.

    A wanted module that is neither a module nor built in raises ValueError naming it."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name not in index:
            via = f" (needed by {' -> '.join(chain)})" if chain else ""
            raise ValueError(f"kernel module {name!r} is not in this kernel{via}")
        seen.add(name)
        for dep in depends(index[name]):
            visit(dep, (*chain, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def builtin_modules(modules_dir: Path) -> set[str]:
    """Names of the modules compiled into the kernel (modules.builtin)."""
    path = modules_dir / "modules.builtin"
    if not path.exists():
        return set()
    return {
        Path(line.strip()).name.removesuffix(".ko").replace("-", "_")
        for line in path.read_text().splitlines()
    }
