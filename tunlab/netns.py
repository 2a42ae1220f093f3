"""Linux network namespaces (public): NetNamespace creates, opens and enters them without a
fork — sockets, programs, netlink and sysctls inside a namespace (docs/devices.md)."""

from __future__ import annotations

from tunlab._linux.netns import NETNS_RUN_DIR, NetNamespace, call_in_netns, list_named_netns

__all__ = ["NETNS_RUN_DIR", "NetNamespace", "call_in_netns", "list_named_netns"]
