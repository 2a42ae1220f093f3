"""struct virtio_net_hdr (the 10-byte header IFF_VNET_HDR puts in front of each frame)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIRTIO_NET_HDR_LEN = 10
IDEAL_BATCH_SIZE = 128

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

HDR_STRUCT = struct.Struct("=BBHHHH")  # native byte order, as the kernel uses on the tun fd
GSO_NONE_HEADER = bytes(VIRTIO_NET_HDR_LEN)

GSO_TYPE_NAMES = {  # the kernel's names, without the VIRTIO_NET_HDR_GSO_ prefix
    VIRTIO_NET_HDR_GSO_NONE: "NONE",
    VIRTIO_NET_HDR_GSO_TCPV4: "TCPV4",
    VIRTIO_NET_HDR_GSO_UDP: "UDP",
    VIRTIO_NET_HDR_GSO_TCPV6: "TCPV6",
    VIRTIO_NET_HDR_GSO_UDP_L4: "UDP_L4",
}


@dataclass(frozen=True)
class VirtioNetHdr:
    """The kernel's struct virtio_net_hdr: how to finish a checksum and how to segment."""

    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def encode(self) -> bytes:
        """The 10 bytes to put in front of a frame."""
        try:
            return HDR_STRUCT.pack(
                self.flags,
                self.gso_type,
                self.hdr_len,
                self.gso_size,
                self.csum_start,
                self.csum_offset,
            )
        except struct.error as exc:
            raise ValueError(f"VirtioNetHdr field out of range: {exc}") from None

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> VirtioNetHdr:
        """Read the header from the first 10 bytes of buf."""
        if len(buf) < VIRTIO_NET_HDR_LEN:
            raise ValueError(f"a virtio-net header is {VIRTIO_NET_HDR_LEN} bytes, got {len(buf)}")
        return cls(*HDR_STRUCT.unpack_from(buf))

    @property
    def gso_name(self) -> str:
        """The GSO type's name ("none", "tcpv4", "tcpv6", "udp", "udp_l4")."""
        base = GSO_TYPE_NAMES.get(self.gso_type & ~VIRTIO_NET_HDR_GSO_ECN, hex(self.gso_type))
        return base + ("|ECN" if self.gso_type & VIRTIO_NET_HDR_GSO_ECN else "")

    @property
    def needs_csum(self) -> bool:
        """The packet's L4 checksum is partial: the receiver completes it (VIRTIO_NET_HDR_F_NEEDS_CSUM)."""
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
