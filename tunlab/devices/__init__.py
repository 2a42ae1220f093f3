"""tunlab.devices: native TUN/TAP devices (sync and async), with Linux offload.

One interface (DeviceBackend) with a backend per platform behind it (linux/, memory/, ...).
Names load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy
from tunlab.devices.offload._virtio import (
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
    from tunlab.devices._aio import AsyncDevice
    from tunlab.devices._backend import DeviceBackend, FrameFormat
    from tunlab.devices._builder import DeviceBuilder
    from tunlab.devices._capabilities import Capability
    from tunlab.devices._framed import Framed
    from tunlab.devices._interrupt import InterruptEvent
    from tunlab.devices._layer import Layer
    from tunlab.devices._options import LinuxOptions
    from tunlab.devices._packet_batch import PacketBatch
    from tunlab.devices._readiness import Readiness
    from tunlab.devices._sync import BorrowedSyncDevice, SyncDevice
    from tunlab.devices.offload._gro import GROTable

PACKET_INFORMATION_LENGTH = 4

__getattr__, __dir__ = lazy(
    __name__,
    {
        "AsyncDevice": "tunlab.devices._aio",
        "BorrowedSyncDevice": "tunlab.devices._sync",
        "Capability": "tunlab.devices._capabilities",
        "DeviceBackend": "tunlab.devices._backend",
        "DeviceBuilder": "tunlab.devices._builder",
        "FrameFormat": "tunlab.devices._backend",
        "Framed": "tunlab.devices._framed",
        "GROTable": "tunlab.devices.offload._gro",
        "InterruptEvent": "tunlab.devices._interrupt",
        "Layer": "tunlab.devices._layer",
        "LinuxOptions": "tunlab.devices._options",
        "PacketBatch": "tunlab.devices._packet_batch",
        "Readiness": "tunlab.devices._readiness",
        "SyncDevice": "tunlab.devices._sync",
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
    "PacketBatch",
    "Readiness",
    "SyncDevice",
    "VirtioNetHdr",
]
