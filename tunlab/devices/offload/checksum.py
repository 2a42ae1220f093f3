"""Internet checksum (RFC 1071) as fast as Python allows, with an optional numpy accelerator.

The one's-complement sum of 16-bit words equals the buffer read as one big integer modulo
0xFFFF (65536 = 1 mod 65535), so int.from_bytes does the summing in C. numpy, when installed,
sums large buffers several times faster; both give identical results.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "accelerator",
    "checksum",
    "ones_sum",
    "pseudo_header_sum",
    "set_accelerator",
]

_np: Any = None
_NUMPY_MIN = 2048  # below this numpy's call overhead costs more than it saves


def _load_numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def set_accelerator(name: str) -> None:
    """Choose the summing engine: 'numpy' (when installed) or 'python'."""
    global _np
    if name == "python":
        _np = None
    elif name == "numpy":
        np = _load_numpy()
        if np is None:
            raise RuntimeError("numpy is not installed: pip install 'tunlab[fast]'")
        _np = np
    else:
        raise ValueError(f"accelerator: expected 'numpy' or 'python', got {name!r}")


def accelerator() -> str:
    return "numpy" if _np is not None else "python"


if os.environ.get("TUNLAB_CHECKSUM", "auto") != "python":
    _np = _load_numpy()


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement sum of data (odd length padded with a zero byte), folded mod 0xFFFF."""
    n = len(data)
    if _np is not None and n >= _NUMPY_MIN:
        even = n & ~1
        total = int(_np.frombuffer(data, dtype=">u2", count=even >> 1).sum(dtype=_np.uint64))
        if n & 1:
            total += data[-1] << 8
        return (total + initial) % 0xFFFF
    if n & 1:
        return (int.from_bytes(bytes(data) + b"\0", "big") + initial) % 0xFFFF
    return (int.from_bytes(data, "big") + initial) % 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to store in a checksum field: the complemented one's-complement sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(proto: int, src: bytes, dst: bytes, length: int) -> int:
    """Sum of the TCP/UDP pseudo header (IPv4 or IPv6 by address length), folded mod 0xFFFF."""
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length) % 0xFFFF
