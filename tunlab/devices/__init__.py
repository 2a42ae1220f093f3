"""tunlab.devices: native TUN/TAP devices (sync and async), with Linux offload."""

from tunlab.devices.aio import AsyncDevice, Framed
from tunlab.devices.backend import DeviceBackend
from tunlab.devices.builder import DeviceBuilder
from tunlab.devices.capabilities import Capability
from tunlab.devices.interrupt import InterruptEvent
from tunlab.devices.layer import Layer
from tunlab.devices.offload import (
    IDEAL_BATCH_SIZE,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    GROTable,
    VirtioNetHdr,
)
from tunlab.devices.sync import BorrowedSyncDevice, SyncDevice

PACKET_INFORMATION_LENGTH = 4

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
    "Framed",
    "GROTable",
    "InterruptEvent",
    "Layer",
    "SyncDevice",
    "VirtioNetHdr",
]
