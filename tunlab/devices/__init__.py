"""tunlab.devices: native TUN/TAP devices (sync and async), with Linux offload."""

from tunlab.devices.backend import DeviceBackend
from tunlab.devices.builder import DeviceBuilder
from tunlab.devices.capabilities import Capability
from tunlab.devices.interrupt import InterruptEvent
from tunlab.devices.layer import Layer
from tunlab.devices.sync import BorrowedSyncDevice, SyncDevice

PACKET_INFORMATION_LENGTH = 4

__all__ = [
    "PACKET_INFORMATION_LENGTH",
    "BorrowedSyncDevice",
    "Capability",
    "DeviceBackend",
    "DeviceBuilder",
    "InterruptEvent",
    "Layer",
    "SyncDevice",
]
