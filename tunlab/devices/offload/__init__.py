"""Pure offload packet code (no I/O, any OS): virtio-net header, checksums, GSO split, GRO."""

from tunlab.devices.offload._csum import (
    accelerator,
    checksum,
    ones_sum,
    pseudo_header_sum,
    set_accelerator,
)
from tunlab.devices.offload._gro import GROTable, coalesce
from tunlab.devices.offload._gso import complete_checksum, split
from tunlab.devices.offload._impl import available, implementation, use, using
from tunlab.devices.offload._virtio import (
    IDEAL_BATCH_SIZE,
    VIRTIO_NET_HDR_F_DATA_VALID,
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

__all__ = [
    "IDEAL_BATCH_SIZE",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_LEN",
    "GROTable",
    "VirtioNetHdr",
    "accelerator",
    "available",
    "checksum",
    "coalesce",
    "complete_checksum",
    "implementation",
    "ones_sum",
    "pseudo_header_sum",
    "set_accelerator",
    "split",
    "use",
    "using",
]
