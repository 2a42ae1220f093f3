"""Internet checksum (RFC 1071) as fast as Python allows, with an optional numpy accelerator.

The one's-complement sum of 16-bit words equals the buffer read as one big integer modulo
0xFFFF (65536 = 1 mod 65535), so int.from_bytes does the summing in C. numpy, when installed,
sums large buffers several times faster; both give identical results.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tunlab.devices.offload import _impl as _impl

__all__ = [
    "accelerator",
    "checksum",
    "ones_sum",
    "pseudo_header_sum",
    "set_accelerator",
]

Bytes = bytes | bytearray | memoryview

_np: Any = None
_np_pending = os.environ.get("TUNLAB_CHECKSUM", "auto") != "python"  # import numpy on first use
_NUMPY_MIN = 2048  # below this numpy's call overhead costs more than it saves
LITTLE_ENDIAN = sys.byteorder == "little"
NATIVE_U32 = "<u4" if LITTLE_ENDIAN else ">u4"


def _load_numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def numpy_module() -> Any:
    """numpy when it accelerates checksums (imported on first use, not at `import tunlab`), else None."""
    global _np, _np_pending
    if _np_pending:
        _np_pending = False
        _np = _load_numpy()
    return _np


def set_accelerator(name: str) -> None:
    """Choose the summing engine: 'numpy' (when installed) or 'python'."""
    global _np, _np_pending
    _np_pending = False
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
    """The engine the pure-Python checksum uses for large buffers: "numpy" or "python"."""
    return "numpy" if numpy_module() is not None else "python"


def _fold(value: int) -> int:
    """value mod 0xFFFF; halving by shifts beats Python's long division on big buffers."""
    while value >> 4096:
        half = ((value.bit_length() + 31) >> 5) << 4
        value = (value >> half) + (value & ((1 << half) - 1))
    return value % 0xFFFF


def _numpy_sum(data: Bytes) -> int:
    """Big-endian 16-bit word sum via native 32-bit words (order-independent; swap at the end)."""
    n = len(data)
    n4 = n & ~3
    total = int(_np.frombuffer(data, dtype=NATIVE_U32, count=n4 >> 2).sum(dtype=_np.uint64))
    total %= 0xFFFF
    if LITTLE_ENDIAN:
        total = ((total & 0xFF) << 8) | (total >> 8)
    if n4 != n:
        tail = bytes(data[n4:])
        total += int.from_bytes(tail + b"\0" * (len(tail) & 1), "big")
    return total


def ones_sum(data: Bytes, initial: int = 0) -> int:
    """One's-complement sum of data (odd length padded with a zero byte), folded mod 0xFFFF."""
    fast = _impl.fast
    if fast is not None and 0 <= initial < 1 << 63:
        result: int = fast.ones_sum(data, initial)
        return result
    n = len(data)
    if n >= _NUMPY_MIN and numpy_module() is not None:
        return (_numpy_sum(data) + initial) % 0xFFFF
    if n & 1:
        data = bytes(data) + b"\0"
    return _fold(int.from_bytes(data, "big") + initial)


def checksum(data: Bytes, initial: int = 0) -> int:
    """The value to store in a checksum field: the complemented one's-complement sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(proto: int, src: bytes, dst: bytes, length: int) -> int:
    """Sum of the TCP/UDP pseudo header (IPv4 or IPv6 by address length), folded mod 0xFFFF."""
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length) % 0xFFFF
