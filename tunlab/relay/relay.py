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
from tunlab.relay.stages import HookStage, PacketHook, Pipeline, Stage
from tunlab.relay.stats import READY, SLOT_WORDS, STATS_SIZE, DirectionStats

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
        name: str = "relay",
    ) -> None:
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
        self.stats = {key: DirectionStats() for key in DIRECTIONS}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._shared: mmap.mmap | None = None
        self._stop = InterruptEvent()  # wakes thread pumps waiting on their devices
        self._pumps: list[Pump] = []
        self._threads: list[threading.Thread] = []

    def _ends(self) -> list[tuple[SyncDevice, SyncDevice, str]]:
        return [(self.a, self.b, "a->b"), (self.b, self.a, "b->a")]

    def start(self) -> Relay:
        if self.workers == "processes":
            return self._start_processes()
        for dev in (self.a, self.b):
            dev.set_nonblocking(True)
        for src, dst, key in self._ends():
            pump = Pump(
                src.backend,
                dst.backend,
                self.stats[key],
                mode=self.mode,
                stages=self.pipelines[key],
                stop=self._stop,
                read_size=src.max_frame_size if self.mode == "passthrough" else read_size(src),
            )
            t = threading.Thread(target=self._guard, args=(pump, key), name=f"{self.name}-{key}", daemon=True)
            self._pumps.append(pump)
            t.start()
            self._threads.append(t)
        return self

    def _guard(self, pump: Pump, key: str) -> None:
        try:
            pump.run()
        except Exception as exc:  # a relay thread must never die silently
            self.stats[key].error(f"{type(exc).__name__}: {exc}")

    # ---- process workers --------------------------------------------------------------------
    def _start_processes(self) -> Relay:
        parent = str(os.getpid())
        stats_fd = os.memfd_create("tunlab-relay-stats", os.MFD_CLOEXEC)
        os.ftruncate(stats_fd, STATS_SIZE)
        self._shared = mmap.mmap(stats_fd, STATS_SIZE)
        words = memoryview(self._shared).cast("Q")
        for slot, key in enumerate(DIRECTIONS):
            self.stats[key] = DirectionStats(words[slot * SLOT_WORDS : (slot + 1) * SLOT_WORDS])
        try:
            for slot, (src, dst, key) in enumerate(self._ends()):
                hs, hd = src.backend.handoff(), dst.backend.handoff()
                spec = {
                    "src": {**hs.spec, "fds": list(hs.fds)},
                    "dst": {**hd.spec, "fds": list(hd.fds)},
                    "mode": self.mode,
                    "stages": self.pipelines[key].specs(),
                    "read_size": read_size(src),
                    "parent": int(parent),
                    "stats_fd": stats_fd,
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
        while not all(s.words[READY] for s in self.stats.values()):
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
            for stats in self.stats.values():
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

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) or any(p.poll() is None for p in self._procs)
