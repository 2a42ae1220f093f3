"""tunlab.devices: native TUN/TAP devices (sync and async), with Linux offload.

One interface (DeviceBackend) with a backend per platform behind it (linux/, memory/, ...).
Names load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy
from tunlab.devices.offload.virtio import (
    IDEAL_BATCH_SIZE,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    VirtioNetHdr,
)

if TYPE_CHECKING:
    from tunlab.devices.aio import AsyncDevice
    from tunlab.devices.backend import DeviceBackend, FrameFormat
    from tunlab.devices.builder import DeviceBuilder
    from tunlab.devices.capabilities import Capability
    from tunlab.devices.framed import Framed
    from tunlab.devices.interrupt import InterruptEvent
    from tunlab.devices.layer import Layer
    from tunlab.devices.offload.gro import GROTable
    from tunlab.devices.options import LinuxOptions
    from tunlab.devices.readiness import Readiness
    from tunlab.devices.sync import BorrowedSyncDevice, SyncDevice

PACKET_INFORMATION_LENGTH = 4

__getattr__, __dir__ = lazy(
    __name__,
    {
        "AsyncDevice": "tunlab.devices.aio",
        "BorrowedSyncDevice": "tunlab.devices.sync",
        "Capability": "tunlab.devices.capabilities",
        "DeviceBackend": "tunlab.devices.backend",
        "DeviceBuilder": "tunlab.devices.builder",
        "FrameFormat": "tunlab.devices.backend",
        "Framed": "tunlab.devices.framed",
        "GROTable": "tunlab.devices.offload.gro",
        "InterruptEvent": "tunlab.devices.interrupt",
        "Layer": "tunlab.devices.layer",
        "LinuxOptions": "tunlab.devices.options",
        "Readiness": "tunlab.devices.readiness",
        "SyncDevice": "tunlab.devices.sync",
    },
)

__all__ = [
    "IDEAL_BATCH_SIZE",
    "PACKET_INFORMATION_LENGTH",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_LEN",
    "AsyncDevice",
    "BorrowedSyncDevice",
    "Capability",
    "DeviceBackend",
    "DeviceBuilder",
    "FrameFormat",
    "Framed",
    "GROTable",
    "InterruptEvent",
    "Layer",
    "LinuxOptions",
    "Readiness",
    "SyncDevice",
    "VirtioNetHdr",
]
