"""Frame I/O helpers over any backend: a frame as bytes, and the cheapest read and write
callables there are (a relay's hot loop calls them per frame)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from tunlab.devices._backend import Bytes, DeviceBackend, max_frame_size


def read(device: DeviceBackend, bufsize: int | None = None) -> bytes:
    """One frame as bytes (at most bufsize; default: never truncated)."""
    size = max_frame_size(device) if bufsize is None else bufsize
    if device.frame_format.fd_frames:
        return os.read(device.fileno(), size)
    buf = bytearray(size)
    n = device.recv_into(buf)
    del buf[n:]
    return bytes(buf)


def reader(device: DeviceBackend) -> Callable[[int], bytes]:
    """read(device, n) as one callable: os.read bound to the fd where its reads are the frames."""
    if device.frame_format.fd_frames:
        return functools.partial(os.read, device.fileno())
    return functools.partial(read, device)


def writer(device: DeviceBackend) -> Callable[[Bytes], int]:
    """send as one callable: os.write bound to the fd where its writes are the frames."""
    if device.frame_format.fd_frames:
        return functools.partial(os.write, device.fileno())
    return device.send


def raw_fd(device: DeviceBackend) -> int | None:
    """An fd whose reads and writes are exactly this device's frames, or None."""
    return device.fileno() if device.frame_format.fd_frames else None
