"""What the cluster knows of its labs: a record per lab, published on the scheduler (Dask's
datasets), by which other clients find a lab's hosts and routes and no two labs take the same
name or vxlan network identifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

DATASET = "tunlab-lab-"  # + the lab's name
LOCK = "tunlab-labs"  # held while a client claims a name and vnis


def records(client: Client) -> dict[str, dict[str, Any]]:
    """The labs published on the cluster, by name."""
    out = {}
    for key in client.list_datasets():  # type: ignore[no-untyped-call]
        if isinstance(key, str) and key.startswith(DATASET):
            record = client.get_dataset(key, default=None)
            if isinstance(record, dict):
                out[key[len(DATASET) :]] = record
    return out


def taken_vnis(client: Client) -> set[int]:
    """Every vni a recorded lab uses."""
    return {int(v) for r in records(client).values() for v in r.get("vnis", {}).values()}
