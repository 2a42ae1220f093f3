"""tunlab.topologies: declarative labs of network namespaces, containers and VMs.

Names load their module on first use, so the node-driver interface (drivers.base) imports
without pydantic: the pytest plugin's tun_device needs only the device library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.topologies.cleanup import garbage_collect
    from tunlab.topologies.drivers.base import ExecResult, NodeHandle
    from tunlab.topologies.lab import Lab
    from tunlab.topologies.loader import load_file, load_text
    from tunlab.topologies.models import Endpoint, InterfaceSettings, Link, Node, Route, Topology
    from tunlab.topologies.operations import stop_lab

__getattr__, __dir__ = lazy(
    __name__,
    {
        "ExecResult": "tunlab.topologies.drivers.base",
        "NodeHandle": "tunlab.topologies.drivers.base",
        "Lab": "tunlab.topologies.lab",
        "garbage_collect": "tunlab.topologies.cleanup",
        "stop_lab": "tunlab.topologies.operations",
        "load_file": "tunlab.topologies.loader",
        "load_text": "tunlab.topologies.loader",
        "Endpoint": "tunlab.topologies.models",
        "InterfaceSettings": "tunlab.topologies.models",
        "Link": "tunlab.topologies.models",
        "Node": "tunlab.topologies.models",
        "Route": "tunlab.topologies.models",
        "Topology": "tunlab.topologies.models",
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
    "Route",
    "Topology",
    "garbage_collect",
    "load_file",
    "load_text",
    "stop_lab",
]
