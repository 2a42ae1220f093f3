"""Capability flags: what a backend can do, so callers (and tests) ask instead of guessing."""

from __future__ import annotations

import enum


class Capability(enum.Enum):
    """One feature a platform backend may or may not offer."""

    TAP = "tap"  # Layer.L2 devices
    SET_NAME = "set_name"
    ADDRESSES = "addresses"  # list/add/remove IPv4 and IPv6 addresses
    MTU = "mtu"
    MAC = "mac"  # read/set the MAC of TAP devices
    BROADCAST = "broadcast"
    TX_QUEUE_LEN = "tx_queue_len"
    PERSIST = "persist"
    OWNER = "owner"  # owner/group of a persistent device
    MULTI_QUEUE = "multi_queue"
    OFFLOAD = "offload"  # virtio-net header, TSO/USO super-packets
    PACKET_INFORMATION = "packet_information"
    NETNS = "netns"  # create the device inside another network namespace
    ENABLE = "enable"
    FROM_FD = "from_fd"
