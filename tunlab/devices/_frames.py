"""Frame I/O helpers over any backend: a frame as bytes, and the cheapest read and write
callables there are (a relay's hot loop calls them per frame)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from tunlab.devices._backend import Bytes, DeviceBackend, max_frame_size


def check_frame(device: DeviceBackend, data: object) -> None:
    """What send() is given is one frame this device takes: bytes-like, not empty, not larger
    than its largest frame (TypeError / ValueError saying so, before the kernel's bare EINVAL)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"send: expected bytes, bytearray or memoryview, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("send: an empty frame carries no packet (the kernel would refuse it with EINVAL)")
    limit = max_frame_size(device)
    if len(data) > limit:
        raise ValueError(
            f"send: a {len(data)}-byte frame is larger than this device takes ({limit} bytes: "
            "headers and a 64 KiB packet)"
        )


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
