"""Capability flags: what a device can do, so callers (and tests) ask instead of guessing.

Each device has its own set (a TUN has no MAC); a backend class also says, per layer, what
its devices will have, so the builder can refuse an option before anything is created.
"""

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
    FROM_FD = "from_fd"  # wrap an fd opened elsewhere (Android VpnService, Network Extension)
    IF_INDEX = "if_index"  # the OS's interface index
    FD = "fd"  # a pollable device fd: fileno(), into_fd()
    VECTORED = "vectored"  # recv_vectored/send_vectored (readv/writev)
    HANDOFF = "handoff"  # the frame I/O can be handed to a worker process (process relays)
    WINTUN = "wintun"  # Windows' TUN options: Wintun's ring, tunnel type, GUID, DLL; the driver


# what to say when a device lacks a capability (appended to UnsupportedOperationError's message)
HINTS = {
    Capability.TAP: "this platform has no TAP devices here",
    Capability.MAC: "TUN devices have no MAC; use Layer.L2",
    Capability.MULTI_QUEUE: "multi-queue devices are Linux-only",
    Capability.OFFLOAD: "the virtio-net header (TSO/USO super-packets) is Linux-only",
    Capability.NETNS: "network namespaces are Linux-only",
    Capability.OWNER: "owner/group of a persistent device is Linux-only",
    Capability.FD: "this device has no file descriptor (use readiness())",
    Capability.WINTUN: "these options apply to TUN devices on Windows only",
}
