"""Cluster-wide views and cleanup for the command line: every lab part on every host, and
`gc --cluster` (each host collects its own, then records of labs with no part left go)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunlab.cluster._connect import workers
from tunlab.cluster._lab import HEARTBEAT
from tunlab.cluster._records import DATASET, records
from tunlab.cluster._remote import collect, list_parts

if TYPE_CHECKING:
    from distributed import Client


def _by_host(client: Client, answers: dict[str, Any]) -> dict[str, Any]:
    names = {addr: name for name, (addr, _) in workers(client).items()}
    return {names.get(addr, addr): value for addr, value in answers.items()}


def cluster_labs(client: Client) -> list[dict[str, Any]]:
    """One row per lab and host: the parts the hosts hold, and a row for each host a recorded
    lab names that holds nothing of it any more (lost: its worker died or left)."""
    parts = _by_host(client, client.run(list_parts))
    rows = [dict(p, host=host) for host, found in sorted(parts.items()) for p in found]
    held = {(r["lab"], r["host"]) for r in rows}
    for name, record in sorted(records(client).items()):
        for host in record.get("hosts", {}):
            if (name, host) in held:
                continue
            if record.get("status") == "starting":
                rows.append({"lab": name, "host": host, "running": False, "ended": "starting", "nodes": []})
            else:
                rows.append({"lab": name, "host": host, "running": False, "lost": True, "nodes": []})
    return rows


def collect_cluster(client: Client) -> dict[str, list[str]]:
    """`tunlab gc --cluster`: each host downs the parts whose client is gone and collects its
    own dead labs; then the records of labs no host holds any more are removed."""
    removed = _by_host(client, client.run(collect, 3 * HEARTBEAT))
    still = {p["lab"] for found in client.run(list_parts).values() for p in found}
    for name in records(client):
        if name not in still:
            client.unpublish_dataset(DATASET + name)
            removed.setdefault("(cluster)", []).append(f"record of lab {name} (no host holds it)")
    return removed
