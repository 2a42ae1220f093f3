"""Linux TUN/TAP ioctl numbers, flags and struct ifreq packing (values from linux/if_tun.h)."""

from __future__ import annotations

import struct

# _IOW('T', n, int) and friends, 64-bit encodings
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNGETVNETHDRSZ = 0x800454D7
TUNSETVNETHDRSZ = 0x400454D8
TUNSETQUEUE = 0x400454D9
TUNGETDEVNETNS = 0x000054E3  # _IO('T', 227), Linux >= 5.2

# ifr_flags for TUNSETIFF / TUNGETIFF
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_PERSIST = 0x0800

# TUNSETOFFLOAD bits
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

# classic interface flags (linux/if.h)
IFF_UP = 0x1
IFF_RUNNING = 0x40

IFNAMSIZ = 16
IFREQ_SIZE = 40
_IFREQ_FLAGS = struct.Struct(f"{IFNAMSIZ}sH{IFREQ_SIZE - IFNAMSIZ - 2}x")


def pack_ifreq_flags(name: str, flags: int) -> bytes:
    """struct ifreq with ifr_name and ifr_flags set (40 bytes on every 64-bit Linux)."""
    return _IFREQ_FLAGS.pack(name.encode(), flags)


def unpack_ifreq_flags(buf: bytes) -> tuple[str, int]:
    raw, flags = _IFREQ_FLAGS.unpack(buf)
    return raw.split(b"\0", 1)[0].decode(), flags
