"""Where traffic starts and ends: anything with .socket() and .run() — a lab node, a tun_device
peer, or a NetNamespace wrapped in place(ns)."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace
    from tunlab.topologies._drivers.base import NodeHandle


class Place(Protocol):
    """Anything traffic can start from: a lab node, a tun_device peer, place(ns)."""

    def socket(self, family: int = ..., type: int = ..., proto: int = ...) -> socket.socket:
        """A socket opened inside the place (its network namespace)."""
        ...


def family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def server_socket(server: Place, address: str, port: int, kind: int, timeout: float) -> socket.socket:
    """A socket of the server place bound to (address, port), listening if TCP; closed on failure."""
    srv = server.socket(family_of(address), kind)
    try:
        if kind == socket.SOCK_STREAM:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((address, port))
        if kind == socket.SOCK_STREAM:
            srv.listen(1)
        srv.settimeout(timeout)
    except BaseException:
        srv.close()
        raise
    return srv


def place(ns: NetNamespace) -> NodeHandle:
    """A traffic place for a bare namespace: sockets, run and popen inside it."""
    from tunlab.topologies._drivers.base import NodeHandle

    return NodeHandle(ns.name or ns.path, "netns", ns)
