"""Relay: forward frames between two devices, one pump per direction, until stopped.

The relay is what makes a userspace link (a tun-pair) out of two TUN devices. In `passthrough`
mode frames cross unchanged (with offload on both sides, 64 KB super-packets cross in one
read and one write); in `batch` mode each read is split into packets and each batch coalesced
again (recv_multiple / send_multiple), which is where stages (a packet hook, impairments) see
every packet. Pumps run in threads (any stage) or in one process per direction (no shared
GIL: the fastest for per-packet traffic; stages there must be buildable from a spec).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Union

from tunlab._linux.spawn import how_it_ended, spawn
from tunlab.devices._backend import max_frame_size, unsupported
from tunlab.devices._capabilities import Capability
from tunlab.devices._interrupt import InterruptEvent
from tunlab.devices._layer import Layer
from tunlab.devices._sync import SyncDevice
from tunlab.relay._control import ControlWriter, control_pipe
from tunlab.relay._direction import DIRECTIONS, Direction
from tunlab.relay._pump import MODES, Pump
from tunlab.relay._stages import HookStage, PacketHook, Pipeline, Stage, stage_from_spec
from tunlab.relay._stats import (
    BYTES_IN,
    BYTES_OUT,
    DROPPED,
    FRAMES_IN,
    FRAMES_OUT,
    GENERATION,
    IMPAIR_BASE,
    READY,
    SLOT_WORDS,
    SUPERS,
    DirectionStats,
)

if TYPE_CHECKING:
    from tunlab.relay.impair._params import NetemParams

Impairment = Union["NetemParams", Mapping[Direction, "NetemParams"], Any]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


def read_size(dev: SyncDevice) -> int:
    """Frame size a pump reads: whole super-packets with offload, else MTU-sized frames.

    Reading 64 KiB for every 1.5 KiB packet costs a large allocation per packet; with offload
    off the kernel never hands over more than the MTU (plus headers).
    """
    backend = dev.backend
    if backend.frame_format.virtio or Capability.MTU not in backend.capabilities:
        return max_frame_size(backend)
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
        stages: Mapping[Direction, Sequence[Stage]] | None = None,
        workers: str = "threads",
        queues: int = 1,
        name: str = "relay",
        impair: Impairment | None = None,
        impairable: bool = False,
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
            raise ValueError(f"stages: keys are Direction.A_TO_B and Direction.B_TO_A, not {sorted(unknown)}")
        impairing = impair is not None or impairable
        if impairing and queues > 1:
            raise ValueError(
                "an impairment needs queues=1: each queue would be impaired (and rate-limited) on its own"
            )
        self.a, self.b = a, b
        self.mode = mode
        self.hook = hook
        self.workers = workers
        self.queues = queues
        self.name = name
        self.pipelines: dict[Direction, Pipeline] = {}
        self._impair_index: dict[Direction, int] = {}
        chosen_params = _impair_params(impair) if impair is not None else {}
        for key in DIRECTIONS:
            chosen = list((stages or {}).get(key, ()))
            if hook is not None:
                chosen.insert(0, HookStage(hook, key))
            if impairing:
                from tunlab.relay.impair._params import NetemParams
                from tunlab.relay.impair._stage import ImpairStage

                self._impair_index[key] = len(chosen)
                chosen.append(ImpairStage(chosen_params.get(key, NetemParams())))
            self.pipelines[key] = Pipeline(chosen)
            if mode != "batch" and any(st.needs_packets and not st.switches for st in chosen):
                raise ValueError(f"stages of {key} see single packets: use mode='batch'")
        if workers == "processes":
            for dev in (a, b):
                if Capability.HANDOFF not in dev.capabilities:
                    unsupported(dev.backend, "workers='processes'", Capability.HANDOFF)
            for pipe in self.pipelines.values():
                pipe.specs()  # a stage that cannot cross to a process fails here
        self._stats: dict[Direction, list[DirectionStats]] = {key: [] for key in DIRECTIONS}
        self._clones: list[SyncDevice] = []  # the extra queues this relay opened (and closes)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._proc_keys: list[Direction] = []  # the direction each worker process pumps
        self._stderr: list[IO[bytes]] = []  # each worker's stderr (its last words when it dies)
        self._stopping = False
        self._shared: mmap.mmap | None = None
        self._stop = InterruptEvent()  # wakes thread pumps waiting on their devices
        self._controls: list[tuple[Direction, ControlWriter]] = []  # (direction, writer) per pump
        self._generation = 0
        self._pumps: list[Pump] = []
        self._threads: list[threading.Thread] = []

    @property
    def stats(self) -> dict[Direction, DirectionStats]:
        """Counters per direction (all queues together); live while the relay runs."""
        out: dict[Direction, DirectionStats] = {}
        for key, parts in self._stats.items():
            out[key] = parts[0] if len(parts) == 1 else _sum_stats(parts)
        return out

    def _ends(self) -> list[tuple[SyncDevice, SyncDevice, Direction]]:
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
            ends += [(qa[i], qb[i], Direction.A_TO_B), (qb[i], qa[i], Direction.B_TO_A)]
        return ends

    def start(self) -> Relay:
        """Start the workers (threads or processes, one per direction and queue); returns self."""
        if self.workers == "processes":
            return self._start_processes()
        for src, dst, key in self._ends():
            src.set_nonblocking(True)
            stats = DirectionStats()
            self._stats[key].append(stats)
            reader, writer = control_pipe()
            self._controls.append((key, writer))
            pump = Pump(
                src.backend,
                dst.backend,
                stats,
                mode=self.mode,
                stages=self.pipelines[key] if len(self._stats[key]) == 1 else self._copy_stages(key),
                stop=self._stop,
                control=reader,
                read_size=src.max_frame_size if self.mode == "passthrough" else read_size(src),
            )
            name = f"{self.name}-{key}" + (f"-q{len(self._stats[key]) - 1}" if self.queues > 1 else "")
            t = threading.Thread(target=self._guard, args=(pump, stats), name=name, daemon=True)
            self._pumps.append(pump)
            t.start()
            self._threads.append(t)
        return self

    def _copy_stages(self, key: Direction) -> Pipeline:
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
        finally:
            if pump.control is not None:
                pump.control.close()

    # ---- process workers --------------------------------------------------------------------
    def _start_processes(self) -> Relay:
        parent = str(os.getpid())
        ends = self._ends()
        size = len(ends) * SLOT_WORDS * 8
        stats_fd = _shared_file()
        os.ftruncate(stats_fd, size)
        self._shared = mmap.mmap(stats_fd, size)
        base = memoryview(self._shared)
        words = base.cast("Q")
        for slot, (_src, _dst, key) in enumerate(ends):
            self._stats[key].append(DirectionStats(words[slot * SLOT_WORDS : (slot + 1) * SLOT_WORDS]))
        words.release()  # only the slot views keep the mapping: stop() can close it after detaching them
        base.release()
        try:
            for slot, (src, dst, key) in enumerate(ends):
                hs, hd = src.backend.handoff(), dst.backend.handoff()
                reader, writer = control_pipe()
                self._controls.append((key, writer))
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
                    "control_fd": reader.fileno() if self._impair_index else -1,
                }
                fds = (*hs.fds, *hd.fds, stats_fd, *((reader.fileno(),) if self._impair_index else ()))
                argv = [sys.executable, "-I", "-S", WORKER, json.dumps(spec, separators=(",", ":"))]
                # from the long-lived spawner thread: PDEATHSIG follows the forking thread
                err = tempfile.TemporaryFile(prefix="tunlab-relay-")  # noqa: SIM115 (closed by stop())
                try:
                    self._procs.append(spawn(argv, pass_fds=fds, stdin=subprocess.DEVNULL, stderr=err))
                    self._proc_keys.append(key)
                    self._stderr.append(err)
                except BaseException:
                    err.close()
                    raise
                finally:
                    reader.close()
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
            for proc, err in zip(self._procs, self._stderr, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"relay worker exited with status {proc.returncode}{_last_line(err)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay workers not ready within {timeout} s")
            time.sleep(0.002)

    def snapshot(self) -> dict[Direction, DirectionStats]:
        """Current counters per direction (live: worker processes write them in shared memory)."""
        return self.stats

    @property
    def pids(self) -> list[int]:
        """Worker process ids (workers='processes')."""
        return [p.pid for p in self._procs]

    def failures(self) -> list[str]:
        """Workers that died while the relay should be running, each with its cause (exit
        status or signal, its last stderr line): a link whose relay died carries nothing."""
        if self._stopping:
            return []
        out = []
        for proc, key, err in zip(self._procs, self._proc_keys, self._stderr, strict=True):
            code = proc.poll()
            if code is None:
                continue
            out.append(f"relay worker {key} (pid {proc.pid}) {how_it_ended(code)}{_last_line(err)}")
        for thread, pump in zip(self._threads, self._pumps, strict=True):
            if not thread.is_alive():
                errors = pump.stats.errors
                out.append(f"relay thread {thread.name} ended" + (f": {errors[-1]}" if errors else ""))
        return out

    # ---- impairments --------------------------------------------------------------------------
    @property
    def impairable(self) -> bool:
        """This relay has an impairment stage (set at start or later with impair())."""
        return bool(self._impair_index)

    def impair(
        self, params: Impairment | None, direction: Direction | None = None, timeout: float = 5.0
    ) -> None:
        """Set (or with None clear) the impairment of one direction or both, while running.

        Held packets stay queued; the call returns once every pump took the new settings.
        """
        from tunlab.relay.impair._params import NetemParams

        if not self._impair_index:
            raise ValueError(f"{self.name}: built without an impairment stage (Relay(..., impairable=True))")
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"direction: expected a Direction or None (both), got {direction!r}")
        chosen = _impair_params(params) if params is not None else dict.fromkeys(DIRECTIONS, NetemParams())
        keys = [direction] if direction is not None else list(DIRECTIONS)
        self._generation += 1
        gen = self._generation
        for key in keys:
            stage = self.pipelines[key].stages[self._impair_index[key]]
            spec = {"kind": "impair", "params": chosen[key].to_json(), "generation": gen}
            if not self.running:
                stage.reconfigure(spec, time.monotonic())
                continue
            for k, writer in self._controls:
                if k == key:
                    writer.send({"op": "stage", "index": self._impair_index[key], "spec": spec})
        if not self.running:
            return
        deadline = time.monotonic() + timeout
        while not all(s.words[IMPAIR_BASE + GENERATION] >= gen for key in keys for s in self._stats[key]):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: the relay did not take the new impairment within {timeout} s"
                )
            time.sleep(0.001)
        for key in keys:  # the parent's copy of the stage follows (a process worker's spec, queue copies)
            stage = self.pipelines[key].stages[self._impair_index[key]]
            if self.workers == "processes":
                stage.params = chosen[key]  # type: ignore[attr-defined]

    def impairment(self, direction: Direction) -> NetemParams | None:
        """The impairment set on a direction now (None without an impairment stage)."""
        if direction not in self._impair_index:
            return None
        stage = self.pipelines[direction].stages[self._impair_index[direction]]
        params: NetemParams = stage.params  # type: ignore[attr-defined]
        return params

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers and wait for them (up to timeout seconds each); counters are kept."""
        self._stopping = True
        for _key, writer in self._controls:
            if self._threads:
                with contextlib.suppress(OSError):
                    writer.send({"op": "stop"})
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self._proc_keys.clear()
        for err in self._stderr:
            err.close()
        self._stderr.clear()
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
            for _key, writer in self._controls:
                writer.close()
            self._controls.clear()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Some worker is still moving frames."""
        return any(t.is_alive() for t in self._threads) or any(p.poll() is None for p in self._procs)


def _impair_params(impair: Impairment) -> dict[Direction, NetemParams]:
    """{direction: params} from NetemParams (both ways), a mapping of them, or a model with .params()."""
    from tunlab.relay.impair._params import NetemParams

    if hasattr(impair, "params") and callable(impair.params):
        impair = impair.params()
    if isinstance(impair, NetemParams):
        return dict.fromkeys(DIRECTIONS, impair)
    if isinstance(impair, Mapping):
        unknown = set(impair) - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"impair: keys are Direction.A_TO_B and Direction.B_TO_A, not {sorted(unknown)}")
        return {k: impair.get(k, NetemParams()) for k in DIRECTIONS}
    raise TypeError(f"impair: expected NetemParams, a mapping of directions or a Netem model, got {impair!r}")


def _last_line(err: IO[bytes]) -> str:
    """': <the last line a worker wrote to stderr>', or '' when it wrote nothing."""
    try:
        err.seek(max(0, os.fstat(err.fileno()).st_size - 2048))
        lines = err.read().decode(errors="replace").strip().splitlines()
    except (OSError, ValueError):
        return ""
    return f": {lines[-1]}" if lines else ""


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


def _shared_file() -> int:
    """An fd for the counters this process and its workers share (close-on-exec; a worker
    gets it passed): a memfd where the OS has one, else an unlinked temporary file."""
    if hasattr(os, "memfd_create") and hasattr(os, "MFD_CLOEXEC"):
        return os.memfd_create("tunlab-relay-stats", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="tunlab-relay-stats-")
    os.unlink(path)
    return fd
