"""Write a newc cpio archive (what the kernel unpacks as an initramfs), from Python.

Entries are (path, mode, data) for files, (path, mode) for directories and (path, target)
symlinks; owners are root, times 0, so the archive's bytes depend on its contents only.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    path: str  # without a leading slash
    mode: int  # with the file type bits (stat.S_IFREG | 0o755 ...)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # a device node's (major, minor)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path.lstrip("/"), stat.S_IFREG | perm, data)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path.lstrip("/"), stat.S_IFDIR | perm)


def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path.lstrip("/"), stat.S_IFCHR | perm, b"", (major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write(out: BinaryIO, entries: Iterable[Entry]) -> None:
    """The archive of entries (parents must come before children), with its trailer."""
    ino = 1
    for entry in [*entries, Entry("TRAILER!!!", 0)]:
        name = entry.path.encode() + b"\0"
        major, minor = entry.rdev
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, major, minor, len(name), 0)
        header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
        out.write(header + name + _pad(len(header) + len(name)))
        out.write(entry.data + _pad(len(entry.data)))
        ino += 1
