"""tunlab.cluster: one lab across several hosts, each a Dask worker (docs/cluster.md).

Needs the `cluster` extra (`pip install 'tunlab[cluster]'`, which brings Dask distributed);
the names here import without it, and using them says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.cluster._connect import ClusterError, Tls, check_address
    from tunlab.cluster._handles import ClusterLink, ClusterNode
    from tunlab.cluster._lab import ClusterLab
    from tunlab.cluster._simulation import SimulatedCluster

__getattr__, __dir__ = lazy(
    __name__,
    {
        "ClusterError": "tunlab.cluster._connect",
        "Tls": "tunlab.cluster._connect",
        "check_address": "tunlab.cluster._connect",
        "ClusterLab": "tunlab.cluster._lab",
        "ClusterLink": "tunlab.cluster._handles",
        "ClusterNode": "tunlab.cluster._handles",
        "SimulatedCluster": "tunlab.cluster._simulation",
    },
)

__all__ = [
    "ClusterError",
    "ClusterLab",
    "ClusterLink",
    "ClusterNode",
    "SimulatedCluster",
    "Tls",
    "check_address",
]
