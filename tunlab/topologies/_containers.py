"""Docker containers made by tunlab labs: found by label, removed by lab id."""

from __future__ import annotations

from typing import Any

from tunlab.errors import LabError

LABEL_LAB = "tunlab.lab"
LABEL_ID = "tunlab.lab-id"
LABEL_OWNER = "tunlab.owner-pid"


def docker_client(timeout: int = 60) -> Any:
    """A client for the local engine, or a LabError saying what is missing."""
    try:
        import docker
    except ImportError:
        raise LabError("kind: container needs the docker SDK: pip install 'tunlab[docker]'") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise LabError(
            f"kind: container needs a running docker engine ({type(exc).__name__}: {exc}); "
            "start the engine (`systemctl start docker`, or `dockerd &` as root); `tunlab doctor` checks it"
        ) from None
    return client


def _client() -> Any | None:
    """For cleanup: a client when docker is there (short timeout), else None (nothing to clean)."""
    try:
        return docker_client(timeout=10)
    except LabError:
        return None


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
