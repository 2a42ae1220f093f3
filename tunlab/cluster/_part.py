"""HostPart: one host's part of a lab across hosts, held by a Dask actor on that host's worker.

The part is an ordinary Lab of this host (same engine, state file in this host's
TUNLAB_RUN_DIR, same `tunlab gc`), held by the worker process. Parts are also listed here by
lab name, so any client reaches them (`tunlab exec/ps/down/gc --cluster`), and so a part
outlives the client that made it: a detached part stays until `down`; a foreground part
ends once its client has not been heard from for `orphan_after` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tunlab.errors import LabError
from tunlab.relay._direction import Direction
from tunlab.topologies._lab import Lab
from tunlab.topologies._links import wire
from tunlab.topologies._loader import model_from_data

T = TypeVar("T")
ORPHAN_AFTER = 10.0  # seconds without a word from its client before a foreground part ends
_parts: dict[str, HostPart] = {}
_parts_lock = threading.Lock()


class HostPart:
    """A lab's part on this host: reserve its wires' ports, bring it up, use it, take it down."""

    def __init__(
        self, lab: str, host: str, *, detached: bool = False, orphan_after: float = ORPHAN_AFTER
    ) -> None:
        self.lab_name = lab
        self.host = host
        self.detached = detached
        self.orphan_after = orphan_after
        self.last_heard = time.monotonic()
        self.ended_because: str | None = None
        self._lab: Lab | None = None
        self._reserved: list[tuple[str, int]] = []
        self._lock = threading.RLock()
        self._watch: threading.Thread | None = None

    # ---- bringing it up ---------------------------------------------------------------------
    def reserve(self, addresses: list[str]) -> list[int]:
        """A UDP port on each underlay address, held for the wire that will name it."""
        with self._lock:
            ports = []
            try:
                for address in addresses:
                    port = wire.reserve(address)
                    self._reserved.append((address, port))
                    ports.append(port)
            except OSError as exc:
                self._release()
                raise LabError(
                    f"host {self.host}: cannot bind a UDP socket on {address}: {exc.strerror or exc} "
                    "(is it this host's address? give hosts: [{name, underlay}])"
                ) from None
            return ports

    def _release(self) -> None:
        for address, port in self._reserved:
            wire.release(address, port)
        self._reserved.clear()

    def up(self, topology: dict[str, Any], source: str | None = None) -> dict[str, Any]:
        """Bring this host's part up (rolled back on failure, as any lab's up)."""
        with self._lock:
            with _parts_lock:
                other = _parts.get(self.lab_name)
                if other is not None and other is not self and other.running:
                    self._release()
                    raise LabError(
                        f"host {self.host} already holds a lab named '{self.lab_name}': "
                        "`tunlab down NAME --cluster` first, or give this one another name"
                    )
                _parts[self.lab_name] = self
            lab = Lab(model_from_data(topology), name=self.lab_name, source=source)
            lab.detached = self.detached
            try:
                lab.up()
            except BaseException:
                with _parts_lock:
                    if _parts.get(self.lab_name) is self:
                        del _parts[self.lab_name]
                raise
            finally:
                self._release()  # the wires took theirs; a failed deploy leaves none behind
            self._lab = lab
            self.last_heard = time.monotonic()
            self._watch = threading.Thread(
                target=self._watch_client, name=f"tunlab-part-{self.lab_name}", daemon=True
            )
            self._watch.start()
            return self.info()

    # ---- using it ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._lab is not None and self._lab.running

    def _running_lab(self) -> Lab:
        lab = self._lab
        if lab is None or not lab.running:
            why = f" ({self.ended_because})" if self.ended_because else ""
            raise LabError(f"the part of lab '{self.lab_name}' on host {self.host} is not up{why}")
        return lab

    def run(
        self, node: str, argv: list[str], timeout: float | None = 60.0, input: bytes | None = None
    ) -> tuple[int, bytes, bytes]:
        """A command in one of this part's nodes: (exit code, stdout, stderr)."""
        done = self._running_lab().node(node).run(argv, timeout=timeout, input=input)
        return done.code, done.stdout, done.stderr

    def impair(self, link: int, impairment: Any, direction: str | None = None) -> dict[str, Any]:
        """Set link's impairment as LabLink.impair takes it (None clears it, one direction when
        given); its stats after."""
        with self._lock:
            live = self._running_lab().link(link)
            way = Direction.parse(direction) if direction is not None else None
            if impairment is None:
                live.clear(way)
            else:
                live.impair(impairment, direction=way)
            return live.stats()

    def link_stats(self, link: int) -> dict[str, Any]:
        return self._running_lab().link(link).stats()

    def inspect(self) -> dict[str, Any]:
        """`tunlab inspect` of this host's part (nodes, interfaces, routes, live counters)."""
        from tunlab.topologies._operations import inspect_running

        self._running_lab()
        return inspect_running(self.lab_name)

    def processes(self, node: str | None = None) -> dict[str, Any]:
        """`tunlab ps` of this host's part: the processes of each node (or one)."""
        from tunlab.topologies._operations import processes_running

        self._running_lab()
        return processes_running(self.lab_name, node)

    def capture(
        self, node: str, interface: str, seconds: float, count: int | None = None
    ) -> tuple[bytes, int, int]:
        """`tunlab capture` on this host: (the pcap file's bytes, packets, super-packets)."""
        import tempfile

        from tunlab.testing._capture import capture_running

        self._running_lab()
        with tempfile.TemporaryDirectory(prefix="tunlab-capture-") as tmp:
            path = os.path.join(tmp, "capture.pcap")
            packets = capture_running(self.lab_name, node, interface, path, seconds, count)
            with open(path, "rb") as f:
                return f.read(), len(packets), sum(1 for p in packets if p.is_gso)

    def health(self) -> dict[str, str]:
        """The parts of this host's lab that died ({} while all work)."""
        lab = self._lab
        if lab is None or not lab.running:
            return {"lab": self.ended_because or "down"}
        return lab.health()

    async def touch(self) -> None:
        """The client is alive (runs on the worker's event loop: never waits for a deploy)."""
        self.last_heard = time.monotonic()

    def info(self) -> dict[str, Any]:
        lab = self._lab
        return {
            "lab": self.lab_name,
            "host": self.host,
            "running": self.running,
            "detached": self.detached,
            "nodes": sorted(lab.topology.nodes) if lab is not None else [],
            "links": len(lab.topology.links) if lab is not None else 0,
            "health": self.health() if self.running else {},
            "heard": round(time.monotonic() - self.last_heard, 1),
            "ended": self.ended_because,
        }

    # ---- taking it down -----------------------------------------------------------------------
    def down(self, why: str | None = None) -> list[str]:
        """Tear this part down; the problems met (empty when all went well)."""
        with self._lock:
            self._release()
            lab, self._lab = self._lab, None
            if why is not None:
                self.ended_because = why
            with _parts_lock:
                if _parts.get(self.lab_name) is self:
                    del _parts[self.lab_name]
            return lab.down() if lab is not None else []

    def orphaned(self, after: float | None = None) -> bool:
        """A foreground part whose client has been silent for `after` seconds."""
        limit = self.orphan_after if after is None else after
        return not self.detached and self.running and time.monotonic() - self.last_heard > limit

    def _watch_client(self) -> None:
        while self.running:
            if self.orphaned():
                self.down(f"its client was silent for {self.orphan_after:g} s")
                return
            time.sleep(min(1.0, self.orphan_after / 4))


# ---- reached by name, from any client (client.run on this host's worker) ---------------------
def part(lab: str) -> HostPart:
    """This host's part of lab `lab` (LabError when it has none)."""
    with _parts_lock:
        found = _parts.get(lab)
    if found is None:
        raise LabError(f"this host holds no part of a lab named '{lab}'")
    return found


def parts() -> list[HostPart]:
    with _parts_lock:
        return list(_parts.values())


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run fn off the worker's event loop (client.run would block it otherwise)."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
