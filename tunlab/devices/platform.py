"""Pick the backend for this OS once; everything else talks to DeviceBackend."""

from __future__ import annotations

import sys

from tunlab.devices.backend import DeviceBackend
from tunlab.devices.config import DeviceConfig
from tunlab.errors import UnsupportedOperationError


def _no_backend() -> UnsupportedOperationError:
    return UnsupportedOperationError(f"tunlab has no TUN/TAP backend for sys.platform={sys.platform!r} yet")


def create_backend(config: DeviceConfig) -> DeviceBackend:
    """Create the device described by config with this platform's backend."""
    if sys.platform.startswith("linux"):
        from tunlab.devices.linux.backend import LinuxDevice

        return LinuxDevice.create(config)
    raise _no_backend()


def backend_from_fd(fd: int, *, owned: bool) -> DeviceBackend:
    """Wrap an already open device fd (owned: closed by close())."""
    if sys.platform.startswith("linux"):
        from tunlab.devices.linux.backend import LinuxDevice

        return LinuxDevice.from_fd(fd, owned=owned)
    raise _no_backend()
