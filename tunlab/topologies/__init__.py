"""tunlab.topologies: declarative labs of network namespaces (containers and VMs to come)."""

from tunlab.topologies.drivers.base import ExecResult, NodeHandle
from tunlab.topologies.lab import Lab, garbage_collect, stop_lab
from tunlab.topologies.loader import load_file, load_text
from tunlab.topologies.models import Endpoint, InterfaceSettings, Link, Node, Route, Topology

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
