"""Docker containers made by tunlab labs: found by label, removed by lab id."""

from __future__ import annotations

import contextlib
from typing import Any

LABEL_LAB = "tunlab.lab"
LABEL_ID = "tunlab.lab-id"
LABEL_OWNER = "tunlab.owner-pid"


def _client() -> Any | None:
    """A docker client when the SDK is installed and an engine answers; otherwise None."""
    try:
        import docker
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:
        return None
    return client


def remove_lab_containers(lab_id: str) -> list[str]:
    """Force-remove the containers of one lab; returns problems."""
    client = _client()
    if client is None:
        return []
    problems = []
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_ID}={lab_id}"}):
        try:
            c.remove(force=True)
        except Exception as exc:
            problems.append(f"container {c.name}: {exc}")
    return problems


def collect_orphans(live_ids: set[str]) -> list[str]:
    """Remove tunlab containers whose lab is not alive; returns what was removed."""
    client = _client()
    if client is None:
        return []
    removed = []
    for c in client.containers.list(all=True, filters={"label": LABEL_ID}):
        if c.labels.get(LABEL_ID) not in live_ids:
            with contextlib.suppress(Exception):
                c.remove(force=True)
                removed.append(f"container {c.name}")
    return removed
