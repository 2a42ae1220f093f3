"""The pump: one direction of a relay, read -> stages -> write, over two device backends.

The same code runs in a relay's worker thread and in its worker process. In passthrough mode
frames cross unchanged (with offload, 64 KB super-packets in one read and one write); in
batch mode each read is split into packets and each batch coalesced again, which is what
per-packet stages need. The pump waits on "source readable, or the earliest stage deadline",
and on an InterruptEvent that stops it between batches.
"""

from __future__ import annotations

import errno
import select
import sys
import time
from collections.abc import Sequence
from typing import Any

from tunlab.devices import _frames as frames
from tunlab.devices._backend import BatchResult, Bytes, DeviceBackend, max_frame_size
from tunlab.devices._batch import Receiver, batch_frames, send_arena
from tunlab.devices._interrupt import InterruptEvent
from tunlab.devices._layer import Layer
from tunlab.devices._packet_batch import PacketBatch
from tunlab.devices.offload import IDEAL_BATCH_SIZE, GROTable, coalesce
from tunlab.devices.offload import _impl as _impl
from tunlab.errors import DeviceClosedError
from tunlab.relay._control import Control
from tunlab.relay._stages import Packet, Pipeline
from tunlab.relay._stats import (
    BYTES_IN,
    BYTES_OUT,
    DROPPED,
    DROPPED_BYTES,
    FRAMES_IN,
    FRAMES_OUT,
    READY,
    READY_DERIVED,
    SUPERS,
    DirectionStats,
)

MODES = ("passthrough", "batch")
# the source or destination went away: EBADF everywhere; EBADFD is Linux's "TUN interface removed"
# (a name only Linux's errno has: looked up, never assumed)
_GONE = frozenset(c for c in (errno.EBADF, getattr(errno, "EBADFD", None)) if c is not None)
FINE_WAIT = 0.002  # closer than this to a deadline, wait with select's microseconds, not poll's ms
PR_SET_TIMERSLACK = 29
POLL_MAX_MS = 2**31 - 1  # poll() takes an int of milliseconds; a later deadline waits again


class Stopped(Exception):
    """The relay is stopping or a device went away."""


class Pump:
    """Move frames src -> dst until stopped; counts in stats (see DirectionStats)."""

    def __init__(
        self,
        src: DeviceBackend,
        dst: DeviceBackend,
        stats: DirectionStats,
        *,
        mode: str = "passthrough",
        stages: Pipeline | None = None,
        stop: InterruptEvent | None = None,
        control: Control | None = None,
        read_size: int | None = None,
        batch: int = IDEAL_BATCH_SIZE,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected 'passthrough' or 'batch', got {mode!r}")
        self.src, self.dst = src, dst
        self.stats = stats
        self.mode = mode
        self.stages = stages or Pipeline()
        self.stop = stop
        self.control = control
        self.stopping = False  # seen between frames: a busy source never hides a stop
        self.blocking_drop = stop is None  # a worker process drops when the peer is full
        self._stop_fd = stop.fileno() if stop is not None else -1
        self._control_fd = control.fileno() if control is not None else -1
        # what wakes the compiled loop: the control pipe (the relay sends stop there too)
        self._wake_fd = self._control_fd if control is not None else self._stop_fd
        self._slack_set = False
        whole = mode == "passthrough" and src.frame_format == dst.frame_format
        for stage in self.stages.stages:
            stage.attach(
                l2=src.layer is Layer.L2,
                counters=stats.impair_words,
                frames=whole,
                virtio=src.frame_format.virtio,
            )
        self._pollers: dict[tuple[int, bool], Any] = {}
        self.read_size = read_size or max_frame_size(src)
        self.batch = batch
        self._table = GROTable()
        self._rx = Receiver(src)
        self._arena: PacketBatch | None = None

    # ---- entry ------------------------------------------------------------------------------
    def run(self) -> None:
        """Until stopped (or a device closes). Passthrough with no stage engaged takes the fast
        loop; a control message that engages a stage (an impairment set at run time) switches
        to the per-packet loop, and back once the stage has nothing left to do."""
        try:
            while not self.stopping:
                if self.mode == "passthrough" and not self.stages.engaged:
                    self._forward()
                    if self.stopping or not self._readable(self._control_fd):
                        return  # stopped, or a device went away
                    self._take_control()
                elif not self.stages.engaged:
                    self._batches()
                else:
                    self._loop()
        except (Stopped, DeviceClosedError):
            return

    def _take_control(self) -> bool:
        """Apply waiting control messages; Stopped on a stop message. True if there were any."""
        if self.control is None:
            return False
        messages = self.control.messages()
        for msg in messages:
            op = msg.get("op")
            if op == "stop":
                self.stopping = True
                raise Stopped
            if op == "stage":
                try:
                    self.stages.stages[int(msg["index"])].reconfigure(msg["spec"], time.monotonic())
                except (ValueError, KeyError, IndexError, TypeError) as exc:  # the old settings stay
                    self.stats.error(f"reconfigure: {type(exc).__name__}: {exc}")
        return bool(messages)

    @staticmethod
    def _readable(fd: int) -> bool:
        if fd < 0:
            return False
        return bool(select.select([fd], [], [], 0)[0]) if fd < 1024 else _poll_readable(fd)

    def _forward(self) -> None:
        """Read a frame, write it, count it: the least interpreter work per frame there is.

        Blocking devices (a worker process) never wait here; nonblocking ones (threads) wait
        on readiness and the stop event. Only reads and drops are counted: frames and bytes
        out are reads minus drops (two fewer updates per frame).
        """
        fast = _impl.fast
        fd_in, fd_out = frames.raw_fd(self.src), frames.raw_fd(self.dst)
        if fast is not None and hasattr(fast, "pump") and fd_in is not None and fd_out is not None:
            # the compiled loop: read -> write with the GIL released (threads run in parallel)
            fast.pump(
                fd_in,
                fd_out,
                self.read_size,
                self.stats.words,
                self.src.frame_format.virtio,
                self._wake_fd,
                self.blocking_drop,
            )
            return
        recv, send = frames.reader(self.src), frames.writer(self.dst)
        size = self.read_size
        words = self.stats.words
        words[READY] = READY_DERIVED
        vnet = self.src.frame_format.virtio
        src, dst = self.src, self.dst
        poller = self._make_poller(src, False) if src.nonblocking else None
        wait_readable = poller.poll if poller is not None else None
        wake = (self._stop_fd, self._control_fd)
        while not self.stopping:
            try:
                frame = recv(size)
            except BlockingIOError:
                if wait_readable is None:
                    try:
                        self._wait(src, write=False, timeout=None)
                    except Stopped:
                        return
                    continue
                events = wait_readable()
                if self.stopping or any(fd in wake for fd, _ in events):
                    return
                continue
            if not frame:
                return
            words[FRAMES_IN] += 1
            words[BYTES_IN] += len(frame)
            if vnet and frame[1]:  # virtio-net header gso_type: a super-packet
                words[SUPERS] += 1
            while True:
                try:
                    send(frame)
                    break
                except BlockingIOError:
                    if self.blocking_drop:
                        words[DROPPED] += 1  # a full queue drops, as a NIC would
                        words[DROPPED_BYTES] += len(frame)
                        break
                    self._wait(dst, write=True, timeout=None)
                except OSError as exc:
                    if exc.errno in _GONE:
                        return
                    # EIO (peer interface down), EINVAL (a refused frame): dropped
                    words[DROPPED] += 1
                    words[DROPPED_BYTES] += len(frame)
                    break

    def _batches(self) -> None:
        """Batch mode with no stage engaged: recv_multiple into a PacketBatch, send_multiple
        from it — the public batch API's own steps (split into the arena, coalesce in one pass),
        nothing allocated per packet. Returns when a control message engages a stage."""
        batch = self._arena
        if batch is None:
            batch = self._arena = PacketBatch(self.batch)
        rx, words = self._rx, self.stats.words
        receive, sizes = rx.receive, batch.sizes
        tick = 0
        while not self.stopping:
            reads, supers, nbytes = rx.reads, rx.supers, rx.nbytes
            try:
                n = receive(batch, sizes, batch.offset, wait_fd=self._wake_fd)
            except (InterruptedError, BlockingIOError) as idle:
                if isinstance(idle, BlockingIOError):  # a read that does not wait by itself
                    self._wait(self.src, write=False, timeout=None)
                if self._take_control() and self.stages.engaged:  # (InterruptedError: a message came)
                    return
                continue
            words[FRAMES_IN] += rx.reads - reads
            words[SUPERS] += rx.supers - supers
            words[BYTES_IN] += rx.nbytes - nbytes
            if n:
                self._send_batch(batch)
            tick += 1
            if self.control is not None and tick & 31 == 0 and self._take_control() and self.stages.engaged:
                return

    def _loop(self) -> None:
        """Read, run the stages, write; wait for input or the stages' next deadline. Returns
        when the stages have nothing left to do (back to the mode's fast loop)."""
        stages = self.stages
        packets = self.mode == "batch" or (stages.engaged and not stages.frames_only)
        read = self._read_packets if packets else self._read_frames
        if stages.engaged and not self._slack_set:
            _fine_timers()
            self._slack_set = True
        tick = 0
        while not self.stopping:
            try:
                items: list[Packet] | None = read()
            except BlockingIOError:
                items = None
            out = stages.run(items or [], time.monotonic()) if stages else items or []
            if out:
                self._write(out, packets)
            tick += 1
            if self.control is not None and (items is None or tick & 31 == 0) and self._take_control():
                if not stages.engaged:  # back to the fast loop of the mode
                    return
                packets = self.mode == "batch" or (stages.engaged and not stages.frames_only)
                read = self._read_packets if packets else self._read_frames
                continue
            if items is None:
                if not stages.engaged:  # back to the fast loop of the mode
                    return
                deadline = stages.next_deadline() if stages else None
                self._wait_until(deadline)

    # ---- reading ----------------------------------------------------------------------------
    def _read_frames(self) -> list[Packet]:
        """Whole frames, as many as are queued (up to a batch); BlockingIOError if none."""
        recv = frames.reader(self.src)
        size = self.read_size
        words = self.stats.words
        vnet = self.src.frame_format.virtio
        more = self.src.nonblocking
        got: list[Packet] = []
        while len(got) < self.batch:
            try:
                frame = recv(size)
            except BlockingIOError:
                if got:
                    return got
                raise
            if not frame:
                raise Stopped
            words[FRAMES_IN] += 1
            words[BYTES_IN] += len(frame)
            if vnet and frame[1]:
                words[SUPERS] += 1
            got.append(frame)
            if not more:
                break
        return got

    def _read_packets(self) -> list[Packet]:
        """What is queued (up to a batch of reads), split into packets (fresh bytes: a stage
        may keep them); BlockingIOError if nothing is."""
        rx = self._rx
        packets: list[Packet] = list(rx.read_packets())
        words = self.stats.words
        reads = 1
        if len(packets) > 1:
            words[SUPERS] += 1
        if self.src.nonblocking:
            while reads < self.batch:
                try:
                    more = rx.read_packets()
                except BlockingIOError:
                    break
                reads += 1
                if len(more) > 1:
                    words[SUPERS] += 1
                packets += more
        words[FRAMES_IN] += reads
        words[BYTES_IN] += sum(map(len, packets))
        return packets

    # ---- writing ----------------------------------------------------------------------------
    def _send_batch(self, batch: PacketBatch) -> None:
        """send_multiple's steps for a batch: one compiled call where the device allows."""
        sent = send_arena(self.dst, batch, stop_fd=-2 if self.blocking_drop else self._wake_fd)
        if sent is None:
            self._write(batch_frames(self.dst, batch, batch.offset, self._table), False)
            return
        result, _blocked = sent  # blocked: full (a drop, as a NIC would) or stopping
        self._count_written(result)

    def _count_written(self, result: BatchResult) -> None:
        """Frames and bytes written, refusals dropped and reported; Stopped if the device went."""
        words = self.stats.words
        words[FRAMES_OUT] += result.frames - len(result.errors)
        words[BYTES_OUT] += result.bytes
        if result.errors:
            words[DROPPED] += len(result.errors)
            for refused in result.errors:
                if refused.errno in _GONE:
                    raise Stopped
                self.stats.error(f"write: {refused.strerror or refused}")

    def _write(self, items: Sequence[Bytes], packets: bool) -> None:
        if not packets:
            frames = items
        elif self.dst.frame_format.virtio:
            l2 = 14 if self.dst.layer is Layer.L2 else 0
            frames = coalesce(items, udp_gro=self.dst.frame_format.udp_gso, table=self._table, l2_len=l2)
        else:
            frames = items
        rest: Sequence[Bytes] = frames
        while rest:
            try:
                result = self.dst.send_batch(rest)
            except OSError as exc:
                if exc.errno in _GONE:
                    raise Stopped from None
                raise
            self._count_written(result)
            rest = rest[result.frames :]
            if rest:
                self._wait(self.dst, write=True, timeout=None)

    # ---- waiting ----------------------------------------------------------------------------
    def _wait_until(self, deadline: float | None) -> None:
        """Until the source is readable, a control message comes or the deadline (monotonic s)
        passes: poll's milliseconds while far, select's microseconds for the last stretch."""
        if deadline is None:
            self._wait(self.src, write=False, timeout=None)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        target = self.src.readiness().target(False)
        fds = [fd for fd in (target.fd if target else -1, self._control_fd, self._stop_fd) if fd >= 0]
        if remaining < FINE_WAIT and target is not None and max(fds) < 1024:
            ready = select.select(fds, [], [], remaining)[0]
            if self.stopping or (self._stop_fd >= 0 and self._stop_fd in ready):
                raise Stopped
            return
        # wake a little early (whole ms, rounded down); the next round finishes with select
        self._wait(self.src, write=False, timeout=max(0.0, remaining - 0.001), early=True)

    def _wait(self, dev: DeviceBackend, *, write: bool, timeout: float | None, early: bool = False) -> None:
        """Until dev is ready or timeout passes; Stopped when the relay stops meanwhile.

        Where the device has an fd, one poll object per direction is kept (fd + stop event
        registered once): a thread pump waits after almost every burst of frames.
        """
        if self.stopping:
            raise Stopped
        key = (id(dev), write)
        poller = self._pollers.get(key)
        if poller is None:
            poller = self._pollers[key] = self._make_poller(dev, write)
        if poller is not None:
            ms = -1 if timeout is None else int(timeout * 1000 + (0 if early else 0.999))
            events = poller.poll(min(ms, POLL_MAX_MS))  # a longer wait is several polls
            if self.stopping or any(fd == self._stop_fd for fd, _ in events):
                raise Stopped
            return
        try:
            if timeout is not None:
                timeout = min(timeout, POLL_MAX_MS / 1000)
            dev.readiness().wait(write=write, timeout=timeout, interrupt=self.stop)
        except InterruptedError:
            raise Stopped from None
        if self.stopping:
            raise Stopped

    def _make_poller(self, dev: DeviceBackend, write: bool) -> Any:
        target = dev.readiness().target(write)
        poll = getattr(select, "poll", None)
        if target is None or poll is None:
            return None
        poller = poll()
        poller.register(target.fd, target.events)
        if self.stop is not None:
            poller.register(self._stop_fd, select.POLLIN)
        if self.control is not None:
            poller.register(self._control_fd, select.POLLIN)
        return poller


def _poll_readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _fine_timers() -> None:
    """Timer slack 1 us for this thread (Linux; default 50 us): delays land where scheduled.
    Elsewhere there is no such knob (and ctypes.CDLL(None) is a TypeError on Windows)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass
