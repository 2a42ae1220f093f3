"""Linux AF_PACKET sockets for captures: one bound to an interface inside its namespace, with
the virtio-net header in front of each packet (so GSO super-packets show as what they are)."""

from __future__ import annotations

import socket

from tunlab._linux.netns import NetNamespace

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4


def capture_socket(ns: NetNamespace, interface: str, rcvbuf: int = 16 << 20) -> socket.socket:
    """A nonblocking AF_PACKET socket seeing every packet of interface, each after a 10-byte
    virtio-net header; receive with recvfrom_into (addr[2] == PACKET_OUTGOING: sent)."""
    sock = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
