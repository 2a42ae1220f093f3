"""tunlab: native TUN/TAP devices for Python, and declarative network labs to test with them.

Names load their module on first use, so `import tunlab` (and a relay worker process) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy
from tunlab.errors import (
    DeviceClosedError,
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    InterfaceNotFoundError,
    NamespaceNotFoundError,
    OffloadUnavailableError,
    TunlabError,
    TunUnavailableError,
    UnsupportedOperationError,
)

if TYPE_CHECKING:
    from tunlab.devices import (
        PACKET_INFORMATION_LENGTH,
        AsyncDevice,
        BorrowedSyncDevice,
        Capability,
        DeviceBuilder,
        InterruptEvent,
        Layer,
        SyncDevice,
    )

__version__ = "0.1.0"

__getattr__, __dir__ = lazy(
    __name__,
    {
        "PACKET_INFORMATION_LENGTH": "tunlab.devices",
        "AsyncDevice": "tunlab.devices._aio",
        "BorrowedSyncDevice": "tunlab.devices._sync",
        "Capability": "tunlab.devices._capabilities",
        "DeviceBuilder": "tunlab.devices._builder",
        "InterruptEvent": "tunlab.devices._interrupt",
        "Layer": "tunlab.devices._layer",
        "SyncDevice": "tunlab.devices._sync",
    },
)

__all__ = [
    "PACKET_INFORMATION_LENGTH",
    "AsyncDevice",
    "BorrowedSyncDevice",
    "Capability",
    "DeviceBuilder",
    "DeviceClosedError",
    "DeviceError",
    "DevicePermissionError",
    "InterfaceExistsError",
    "InterfaceNotFoundError",
    "InterruptEvent",
    "Layer",
    "NamespaceNotFoundError",
    "OffloadUnavailableError",
    "SyncDevice",
    "TunUnavailableError",
    "TunlabError",
    "UnsupportedOperationError",
    "__version__",
]
