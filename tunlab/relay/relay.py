"""Relay: forward frames between two devices, one pump per direction, until stopped.

The relay is what makes a userspace link (a tun-pair) out of two TUN devices. In `passthrough`
mode frames cross unchanged (with offload on both sides, 64 KB super-packets cross in one
read and one write); in `batch` mode each read is split into packets and each batch coalesced
again (recv_multiple / send_multiple), which is where stages (a packet hook, impairments) see
every packet. Pumps run in threads (any stage) or in one process per direction (no shared
GIL: the fastest for per-packet traffic; stages there must be buildable from a spec).
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from tunlab.devices.capabilities import Capability
from tunlab.devices.interrupt import InterruptEvent
from tunlab.devices.layer import Layer
from tunlab.devices.sync import SyncDevice
from tunlab.linux.spawn import spawn
from tunlab.relay.pump import MODES, Pump
from tunlab.relay.stages import HookStage, PacketHook, Pipeline, Stage, stage_from_spec
from tunlab.relay.stats import (
    BYTES_IN,
    BYTES_OUT,
    DROPPED,
    FRAMES_IN,
    FRAMES_OUT,
    READY,
    SLOT_WORDS,
    SUPERS,
    DirectionStats,
)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
DIRECTIONS = ("a->b", "b->a")


def read_size(dev: SyncDevice) -> int:
    """Frame size a pump reads: whole super-packets with offload, else MTU-sized frames.

    Reading 64 KiB for every 1.5 KiB packet costs a large allocation per packet; with offload
    off the kernel never hands over more than the MTU (plus headers).
    """
    backend = dev.backend
    if backend.frame_format.virtio or Capability.MTU not in backend.capabilities:
        return backend.max_frame_size
    l2 = 14 if backend.layer is Layer.L2 else 0
    return max(dev.mtu, 1500) + backend.frame_format.prefix + l2 + 64


class Relay:
    """Forward frames a -> b and b -> a; stop() (or the with block) ends it."""

    def __init__(
        self,
        a: SyncDevice,
        b: SyncDevice,
        *,
        mode: str = "passthrough",
        hook: PacketHook | None = None,
        stages: Mapping[str, Sequence[Stage]] | None = None,
        workers: str = "threads",
        queues: int = 1,
        name: str = "relay",
    ) -> None:
        if isinstance(queues, bool) or not isinstance(queues, int) or not 1 <= queues <= 64:
            raise ValueError(f"queues: expected 1..64, got {queues!r}")
        if queues > 1 and not (a.multi_queue and b.multi_queue):
            raise ValueError(f"queues={queues} needs both devices built with multi_queue(True)")
        if mode not in MODES:
            raise ValueError(f"mode: expected 'passthrough' or 'batch', got {mode!r}")
        if workers not in ("threads", "processes"):
            raise ValueError(f"workers: expected 'threads' or 'processes', got {workers!r}")
        if hook is not None and mode != "batch":
            raise ValueError("a packet hook needs mode='batch' (packets are split first)")
        if hook is not None and workers == "processes":
            raise ValueError("a packet hook is Python code of this process: use workers='threads'")
        if a.backend.frame_format.virtio != b.backend.frame_format.virtio and mode == "passthrough":
            raise ValueError("passthrough needs offload on both devices or on neither; use mode='batch'")
        if a.layer is not b.layer:
            raise ValueError("both devices must have the same layer (TUN with TUN, TAP with TAP)")
        unknown = set(stages or {}) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"stages: directions are 'a->b' and 'b->a', not {sorted(unknown)}")
        self.a, self.b = a, b
        self.mode = mode
        self.hook = hook
        self.workers = workers
        self.queues = queues
        self.name = name
        self.pipelines: dict[str, Pipeline] = {}
        for key in DIRECTIONS:
            chosen = list((stages or {}).get(key, ()))
            if hook is not None:
                chosen.insert(0, HookStage(hook, key))
            self.pipelines[key] = Pipeline(chosen)
            if self.pipelines[key].needs_packets and mode != "batch":
                raise ValueError(f"stages of {key} see single packets: use mode='batch'")
        if workers == "processes":
            for dev in (a, b):
                if Capability.HANDOFF not in dev.capabilities:
                    dev.backend.unsupported("workers='processes'", Capability.HANDOFF)
            for pipe in self.pipelines.values():
                pipe.specs()  # a stage that cannot cross to a process fails here
        self._stats: dict[str, list[DirectionStats]] = {key: [] for key in DIRECTIONS}
        self._clones: list[SyncDevice] = []  # the extra queues this relay opened (and closes)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._shared: mmap.mmap | None = None
        self._stop = InterruptEvent()  # wakes thread pumps waiting on their devices
        self._pumps: list[Pump] = []
        self._threads: list[threading.Thread] = []

    @property
    def stats(self) -> dict[str, DirectionStats]:
        """Counters per direction (all queues together); live while the relay runs."""
        out = {}
        for key, parts in self._stats.items():
            out[key] = parts[0] if len(parts) == 1 else _sum_stats(parts)
        return out

    def _ends(self) -> list[tuple[SyncDevice, SyncDevice, str]]:
        """(source queue, destination queue, direction) for every pump."""
        qa, qb = [self.a], [self.b]
        if self.queues > 1 and not self._clones:
            for _ in range(self.queues - 1):
                qa.append(self.a.try_clone())
                qb.append(self.b.try_clone())
            self._clones = qa[1:] + qb[1:]
        elif self._clones:
            half = len(self._clones) // 2
            qa += self._clones[:half]
            qb += self._clones[half:]
        ends = []
        for i in range(self.queues):  # queue i of a feeds queue i of b: the kernel keeps a flow on one
            ends += [(qa[i], qb[i], "a->b"), (qb[i], qa[i], "b->a")]
        return ends

    def start(self) -> Relay:
        if self.workers == "processes":
            return self._start_processes()
        for src, dst, key in self._ends():
            src.set_nonblocking(True)
            stats = DirectionStats()
            self._stats[key].append(stats)
            pump = Pump(
                src.backend,
                dst.backend,
                stats,
                mode=self.mode,
                stages=self.pipelines[key] if len(self._stats[key]) == 1 else self._copy_stages(key),
                stop=self._stop,
                read_size=src.max_frame_size if self.mode == "passthrough" else read_size(src),
            )
            name = f"{self.name}-{key}" + (f"-q{len(self._stats[key]) - 1}" if self.queues > 1 else "")
            t = threading.Thread(target=self._guard, args=(pump, stats), name=name, daemon=True)
            self._pumps.append(pump)
            t.start()
            self._threads.append(t)
        return self

    def _copy_stages(self, key: str) -> Pipeline:
        """The stages of another queue of a direction: rebuilt from specs, or shared (hooks)."""
        pipe = self.pipelines[key]
        try:
            return Pipeline([stage_from_spec(s) for s in pipe.specs()])
        except ValueError:
            return pipe

    def _guard(self, pump: Pump, stats: DirectionStats) -> None:
        try:
            pump.run()
        except Exception as exc:  # a relay thread must never die silently
            stats.error(f"{type(exc).__name__}: {exc}")

    # ---- process workers --------------------------------------------------------------------
    def _start_processes(self) -> Relay:
        parent = str(os.getpid())
        ends = self._ends()
        size = len(ends) * SLOT_WORDS * 8
        stats_fd = os.memfd_create("tunlab-relay-stats", os.MFD_CLOEXEC)
        os.ftruncate(stats_fd, size)
        self._shared = mmap.mmap(stats_fd, size)
        words = memoryview(self._shared).cast("Q")
        for slot, (_src, _dst, key) in enumerate(ends):
            self._stats[key].append(DirectionStats(words[slot * SLOT_WORDS : (slot + 1) * SLOT_WORDS]))
        try:
            for slot, (src, dst, key) in enumerate(ends):
                hs, hd = src.backend.handoff(), dst.backend.handoff()
                spec = {
                    "src": {**hs.spec, "fds": list(hs.fds)},
                    "dst": {**hd.spec, "fds": list(hd.fds)},
                    "mode": self.mode,
                    "stages": self.pipelines[key].specs(),
                    "read_size": read_size(src),
                    "parent": int(parent),
                    "stats_fd": stats_fd,
                    "stats_size": size,
                    "slot": slot,
                }
                fds = (*hs.fds, *hd.fds, stats_fd)
                argv = [sys.executable, "-I", "-S", WORKER, json.dumps(spec, separators=(",", ":"))]
                # from the long-lived spawner thread: PDEATHSIG follows the forking thread
                self._procs.append(spawn(argv, pass_fds=fds, stdin=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(stats_fd)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Block until both workers run (their ready flag), so the link works on return."""
        deadline = time.monotonic() + timeout
        while not all(s.words[READY] for parts in self._stats.values() for s in parts):
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"relay worker exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay workers not ready within {timeout} s")
            time.sleep(0.002)

    def snapshot(self) -> dict[str, DirectionStats]:
        """Current counters per direction (live: worker processes write them in shared memory)."""
        return self.stats

    @property
    def pids(self) -> list[int]:
        """Worker process ids (workers='processes')."""
        return [p.pid for p in self._procs]

    def stop(self, timeout: float = 5.0) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._shared is not None:
            for parts in self._stats.values():
                for stats in parts:
                    stats.detach()
            self._shared.close()
            self._shared = None
        if self._stop.fileno() < 0:
            return
        for pump in self._pumps:
            pump.stopping = True
        self._stop.trigger()
        for t in self._threads:
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        if not self._threads:
            self._stop.close()
            for clone in self._clones:
                clone.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) or any(p.poll() is None for p in self._procs)


def _sum_stats(parts: list[DirectionStats]) -> DirectionStats:
    """One direction's counters over its queues (a snapshot)."""
    total = DirectionStats()
    w = total.words
    for part in parts:
        w[FRAMES_IN] += part.frames_in
        w[FRAMES_OUT] += part.frames_out  # derived per part where its pump counts only reads and drops
        w[BYTES_IN] += part.bytes_in
        w[BYTES_OUT] += part.bytes_out
        w[SUPERS] += part.super_frames_in
        w[DROPPED] += part.dropped
        total.errors += part.errors
    return total
