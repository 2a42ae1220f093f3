"""Sysctls of a node's namespace: the lab's own defaults and the node's `sysctls:` (any kind)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunlab._linux.netns import sysctl_path
from tunlab.errors import LabError

if TYPE_CHECKING:
    from tunlab.topologies._models import NodeBase

# IPv6 usable the moment an address is added: no duplicate address detection in a lab (a node's
# own sysctls can turn it back on).
LAB_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


def write_sysctls(node: NodeBase, *, early: bool, where: str = "sysctls") -> None:
    """Write a node's sysctls from a thread inside its namespace.

    early: before interfaces exist; keys that do not exist yet (interface-specific ones) wait
    for the second call, after the interfaces are made, where a missing key is an error.
    where: the field path errors name (nodes.NAME.sysctls).
    """
    for key, value in node.sysctls.items():
        path = sysctl_path(key)
        if not os.path.exists(path):
            if early:
                continue
            raise LabError(f"{where}.{key}: no such key in the node (check the interface name in it)")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise LabError(f"{where}.{key}: the kernel refused {text!r}: {exc.strerror}") from None
