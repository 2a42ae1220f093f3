"""tunlab: native TUN/TAP devices for Python, and declarative network labs to test with them."""

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

__version__ = "0.1.0"

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
