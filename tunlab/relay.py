"""Relay: forward frames between two devices, one worker per direction, until stopped.

The relay is what makes a userspace link (a tun-pair) out of two TUN devices. In `passthrough`
mode frames cross unchanged (with offload on both sides, 64 KB super-packets cross in one
read and one write); in `batch` mode each read is split into packets and each batch coalesced
again (recv_multiple / send_multiple), which is where a hook can look at every packet.
Workers are threads (exact statistics, any mode) or, for passthrough, one process per
direction: blocking read/write loops that share no GIL (the fastest for per-packet traffic).
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tunlab.devices.interrupt import InterruptEvent
from tunlab.devices.offload import IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN, GROTable
from tunlab.devices.sync import SyncDevice
from tunlab.relay_worker import STATS_SIZE

PacketHook = Callable[[str, list[bytes]], list[bytes]]
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_worker.py")


@dataclass
class DirectionStats:
    """What crossed one direction: reads, writes and bytes (frames include their headers)."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    super_frames_in: int = 0  # reads that carried a GSO super-packet
    errors: list[str] = field(default_factory=list)


class Relay:
    """Forward frames a -> b and b -> a in two threads; stop() (or the with block) ends it."""

    def __init__(
        self,
        a: SyncDevice,
        b: SyncDevice,
        *,
        mode: str = "passthrough",
        hook: PacketHook | None = None,
        workers: str = "threads",
        name: str = "relay",
    ) -> None:
        if mode not in ("passthrough", "batch"):
            raise ValueError(f"mode: expected 'passthrough' or 'batch', got {mode!r}")
        if workers not in ("threads", "processes"):
            raise ValueError(f"workers: expected 'threads' or 'processes', got {workers!r}")
        if workers == "processes" and mode != "passthrough":
            raise ValueError("workers='processes' relays frames unchanged: use mode='passthrough'")
        if hook is not None and mode != "batch":
            raise ValueError("a packet hook needs mode='batch' (packets are split first)")
        if a.backend.vnet_hdr != b.backend.vnet_hdr and mode == "passthrough":
            raise ValueError("passthrough needs offload on both devices or on neither; use mode='batch'")
        if a.layer is not b.layer:
            raise ValueError("both devices must have the same layer (TUN with TUN, TAP with TAP)")
        self.a, self.b = a, b
        self.mode = mode
        self.hook = hook
        self.workers = workers
        self.name = name
        self._procs: list[subprocess.Popen[bytes]] = []
        self._shared: mmap.mmap | None = None
        self.stats = {"a->b": DirectionStats(), "b->a": DirectionStats()}
        self._stop = InterruptEvent()  # wakes workers waiting in select()
        self._stopping = False  # seen by workers between frames: a busy queue never blocks them
        self._threads: list[threading.Thread] = []

    def start(self) -> Relay:
        if self.workers == "processes":
            return self._start_processes()
        for dev in (self.a, self.b):
            dev.set_nonblocking(True)
        target = self._pump_passthrough if self.mode == "passthrough" else self._pump_batch
        for src, dst, key in ((self.a, self.b, "a->b"), (self.b, self.a, "b->a")):
            t = threading.Thread(
                target=self._guard,
                args=(target, src, dst, key),
                name=f"{self.name}-{key}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)
        return self

    def _read_size(self, dev: SyncDevice) -> int:
        """Frame size a worker reads: whole super-packets with offload, else MTU-sized frames.

        Reading 64 KiB for every 1.5 KiB packet costs a large allocation per packet; with
        offload off the kernel never hands over more than the MTU (plus headers).
        """
        if dev.backend.vnet_hdr:
            return dev.max_frame_size
        return max(dev.mtu, 1500) + dev.backend.header_len + 14 + 64

    def _start_processes(self) -> Relay:
        parent = str(os.getpid())
        stats_fd = os.memfd_create("tunlab-relay-stats", os.MFD_CLOEXEC)
        os.ftruncate(stats_fd, STATS_SIZE)
        self._shared = mmap.mmap(stats_fd, STATS_SIZE)
        try:
            for slot, (src, dst) in enumerate(((self.a, self.b), (self.b, self.a))):
                fds = (src.fileno(), dst.fileno(), stats_fd)
                argv = [sys.executable, "-I", "-S", _WORKER, str(fds[0]), str(fds[1])]
                argv += [str(self._read_size(src)), parent, str(stats_fd), str(slot)]
                argv.append("1" if src.backend.vnet_hdr else "0")
                self._procs.append(subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL))
        finally:
            os.close(stats_fd)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Block until both workers run (their ready flag), so the link works on return."""
        assert self._shared is not None
        counters = memoryview(self._shared).cast("Q")
        deadline = time.monotonic() + timeout
        try:
            while not (counters[3] and counters[7]):
                for proc in self._procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"relay worker exited with status {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"relay workers not ready within {timeout} s")
                time.sleep(0.002)
        finally:
            counters.release()

    def _process_stats(self) -> None:
        if self._shared is None:
            return
        counters = memoryview(self._shared).cast("Q")
        for slot, key in enumerate(("a->b", "b->a")):
            frames, nbytes, supers = counters[slot * 4 : slot * 4 + 3]
            st = self.stats[key]
            st.frames_in = st.frames_out = frames
            st.bytes_in = st.bytes_out = nbytes
            st.super_frames_in = supers
        counters.release()

    def snapshot(self) -> dict[str, DirectionStats]:
        """Current counters per direction (read from the workers' shared memory if needed)."""
        self._process_stats()
        return self.stats

    @property
    def pids(self) -> list[int]:
        """Worker process ids (workers='processes')."""
        return [p.pid for p in self._procs]

    def stop(self, timeout: float = 5.0) -> None:
        self._process_stats()
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
            self._shared.close()
            self._shared = None
        if self._stop.fileno() < 0:
            return
        self._stopping = True
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

    # ---- the pumps ---------------------------------------------------------------------------
    def _guard(self, target: Callable[..., None], src: SyncDevice, dst: SyncDevice, key: str) -> None:
        try:
            target(src, dst, key)
        except Exception as exc:  # a relay thread must never die silently
            self.stats[key].errors.append(f"{type(exc).__name__}: {exc}")

    def _wait(self, fd: int, write: bool = False) -> bool:
        """Wait until fd is readable (or writable); False once the relay is stopping."""
        if write:
            _, ready, _ = select.select([self._stop.fileno()], [fd], [])
        else:
            ready, _, _ = select.select([fd, self._stop.fileno()], [], [])
        return fd in ready and not self._stopping

    def _pump_passthrough(self, src: SyncDevice, dst: SyncDevice, key: str) -> None:
        stats = self.stats[key]
        rfd, wfd = src.fileno(), dst.fileno()
        size = src.max_frame_size  # threads keep the exact size: no MTU assumption
        vnet = src.backend.vnet_hdr
        read = os.read
        while not self._stopping:
            try:
                frame = read(rfd, size)
            except BlockingIOError:
                if not self._wait(rfd):
                    return
                continue
            stats.frames_in += 1
            stats.bytes_in += len(frame)
            if vnet and frame[1]:
                stats.super_frames_in += 1
            if not self._write(wfd, frame, stats):
                return

    def _write(self, fd: int, frame: bytes | memoryview, stats: DirectionStats) -> bool:
        while True:
            try:
                n = os.write(fd, frame)
            except BlockingIOError:
                if not self._wait(fd, write=True):
                    return False
                continue
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EBADFD):
                    return False
                stats.errors.append(f"write: {exc.strerror}")
                return True
            stats.frames_out += 1
            stats.bytes_out += n
            return True

    def _pump_batch(self, src: SyncDevice, dst: SyncDevice, key: str) -> None:
        stats = self.stats[key]
        bufs = [bytearray(VIRTIO_NET_HDR_LEN + 65535 + 14) for _ in range(IDEAL_BATCH_SIZE)]
        sizes = [0] * IDEAL_BATCH_SIZE
        table = GROTable()
        offset = VIRTIO_NET_HDR_LEN
        while not self._stopping:
            try:
                n = src.recv_multiple(bufs, sizes, offset)
            except BlockingIOError:
                if not self._wait(src.fileno()):
                    return
                continue
            stats.frames_in += 1
            if n > 1:
                stats.super_frames_in += 1
            stats.bytes_in += sum(sizes[:n])
            out: list[bytes] | list[memoryview]
            if self.hook is None:  # the packets stay in our buffers: no copy
                out = [memoryview(bufs[i])[: offset + sizes[i]] for i in range(n)]
            else:
                packets = self.hook(key, [bytes(bufs[i][offset : offset + sizes[i]]) for i in range(n)])
                if not packets:
                    continue
                out = [bytes(VIRTIO_NET_HDR_LEN) + p for p in packets]
            while True:
                try:
                    stats.bytes_out += dst.send_multiple(table, out, offset)
                    stats.frames_out += len(out)
                    break
                except BlockingIOError:
                    if not self._wait(dst.fileno(), write=True):
                        return
                except OSError as exc:
                    if exc.errno in (errno.EBADF, errno.EBADFD):
                        return
                    stats.errors.append(f"send_multiple: {exc}")
                    break
