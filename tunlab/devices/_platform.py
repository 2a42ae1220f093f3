"""Pick the backend for this OS once; everything else talks to DeviceBackend.

Backends register by platform name; each is imported only when used, so importing tunlab on
any OS never loads another OS's code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from tunlab.devices._backend import DeviceBackend
from tunlab.errors import UnsupportedOperationError

if TYPE_CHECKING:
    from tunlab.devices._capabilities import Capability
    from tunlab.devices._config import DeviceConfig
    from tunlab.devices._layer import Layer


class BackendType(Protocol):
    """A backend class: what it makes and what its devices will be able to do. Optional:
    `from_fd(fd, owned=)` and `from_handoff(fds, spec)` where the platform has them."""

    @property
    def platform(self) -> str: ...

    def capabilities_for(self, layer: Layer) -> frozenset[Capability]:
        """What a device of this layer made by this backend can do (checked before creating)."""
        ...

    def create(self, config: DeviceConfig) -> DeviceBackend:
        """Create the device and apply config.link_settings() once; roll back on failure."""
        ...


# platform name -> "module:class"
BACKENDS = {
    "linux": "tunlab.devices._linux.backend:LinuxDevice",
    "darwin": "tunlab.devices._darwin.backend:DarwinDevice",
    "freebsd": "tunlab.devices._bsd.freebsd:FreeBsdDevice",
    "openbsd": "tunlab.devices._bsd.openbsd:OpenBsdDevice",
    "netbsd": "tunlab.devices._bsd.netbsd:NetBsdDevice",
    "win32": "tunlab.devices._windows.backend:WindowsDevice",
    "memory": "tunlab.devices._memory.backend:MemoryDevice",
    "datagram": "tunlab.devices._datagram.backend:DatagramDevice",
}


def current_platform() -> str:
    """The backend name for this OS ('linux', ...), from sys.platform."""
    name = str(sys.platform)
    for family in ("linux", "freebsd", "openbsd", "netbsd"):  # 'freebsd14', 'openbsd7', ...
        if name.startswith(family):
            return family
    return name


def backend_class(platform: str | None = None) -> BackendType:
    """The backend class of a platform (default: this OS), or UnsupportedOperationError."""
    name = platform or current_platform()
    spec = BACKENDS.get(name)
    if spec is None:
        raise UnsupportedOperationError(
            f"tunlab has no TUN/TAP backend for sys.platform={sys.platform!r} yet "
            f"(backends: {', '.join(sorted(BACKENDS))})"
        )
    module, _, cls = spec.partition(":")
    found: BackendType = getattr(importlib.import_module(module), cls)
    return found


def backend_from_fd(fd: int, *, owned: bool) -> DeviceBackend:
    """Wrap an already open device fd (owned: closed by close())."""
    cls = backend_class()
    from_fd = getattr(cls, "from_fd", None)
    if from_fd is None:
        raise UnsupportedOperationError(f"from_fd is not supported on {cls.platform} (capability 'from_fd')")
    dev: DeviceBackend = from_fd(fd, owned=owned)
    return dev


def from_handoff(fds: Sequence[int], spec: dict[str, str | int | bool]) -> DeviceBackend:
    """Rebuild, in a worker process, the frame I/O of a device handed over by backend.handoff()."""
    cls = backend_class(str(spec["platform"]))
    rebuild = getattr(cls, "from_handoff", None)
    if rebuild is None:
        raise UnsupportedOperationError(f"{cls.platform} devices cannot be handed to a worker process")
    dev: DeviceBackend = rebuild(fds, spec)
    return dev
