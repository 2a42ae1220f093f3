"""tunlab.topologies: declarative labs of network namespaces, containers and VMs.

Names load their module on first use, so the node-driver interface (drivers.base) imports
without pydantic: the pytest plugin's tun_device needs only the device library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab._linux.procs import ProcessInfo
    from tunlab.topologies._cleanup import garbage_collect
    from tunlab.topologies._drivers.base import ExecResult, NodeHandle
    from tunlab.topologies._lab import Lab
    from tunlab.topologies._loader import load_file, load_text
    from tunlab.topologies._models import Endpoint, InterfaceSettings, Link, Node, Route, Topology
    from tunlab.topologies._operations import stop_lab

__getattr__, __dir__ = lazy(
    __name__,
    {
        "ExecResult": "tunlab.topologies._drivers.base",
        "NodeHandle": "tunlab.topologies._drivers.base",
        "ProcessInfo": "tunlab._linux.procs",
        "Lab": "tunlab.topologies._lab",
        "garbage_collect": "tunlab.topologies._cleanup",
        "stop_lab": "tunlab.topologies._operations",
        "load_file": "tunlab.topologies._loader",
        "load_text": "tunlab.topologies._loader",
        "Endpoint": "tunlab.topologies._models",
        "InterfaceSettings": "tunlab.topologies._models",
        "Link": "tunlab.topologies._models",
        "Node": "tunlab.topologies._models",
        "Route": "tunlab.topologies._models",
        "Topology": "tunlab.topologies._models",
    },
)

__all__ = [
    "Endpoint",
    "ExecResult",
    "InterfaceSettings",
    "Lab",
    "Link",
    "Node",
    "NodeHandle",
    "ProcessInfo",
    "Route",
    "Topology",
    "garbage_collect",
    "load_file",
    "load_text",
    "stop_lab",
]
