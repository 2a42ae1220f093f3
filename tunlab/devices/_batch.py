"""recv_multiple/send_multiple: the steps around one read or a batch of writes, over a backend.

Shared by the sync and async devices and Framed. Without offload a read lands straight in the
caller's buffer (one copy, kernel to caller). With offload a read brings a super-packet that
is split into packets kept in a queue, so nothing is lost when the caller's buffers run out;
a batch to send is coalesced into super-packets first. The caller's buffers are never modified.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import MutableSequence, Sequence
from typing import Any

from tunlab.devices import _frames as frames
from tunlab.devices._backend import (
    BatchResult,
    Bytes,
    DeviceBackend,
    FrameTooLarge,
    WritableBuffer,
    max_frame_size,
)
from tunlab.devices._layer import Layer
from tunlab.devices._packet_batch import PacketBatch
from tunlab.devices.offload import GROTable, VirtioNetHdr, coalesce
from tunlab.devices.offload import _impl as _impl
from tunlab.devices.offload._gso import packets_of, split, split_frame
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN

# Receiver._next for a frame the compiled core did not plan (read_split's -2 as well)
_UNPLANNED = -2


class RxQueue:
    """Packets split from super-packets (or a frame too large for the caller), waiting."""

    def __init__(self) -> None:
        self.pending: deque[bytes] = deque()

    def feed(self, frame: Bytes, *, vnet: bool, layer: Layer) -> None:
        """Turn one frame read from the device into packets (or frames, for TAP)."""
        if not vnet:
            self.pending.append(bytes(frame))
            return
        if len(frame) <= VIRTIO_NET_HDR_LEN:
            raise ValueError(f"read {len(frame)} bytes: shorter than a virtio-net header")
        hdr = VirtioNetHdr.decode(frame)
        body = memoryview(frame)[VIRTIO_NET_HDR_LEN:]
        if layer is Layer.L2:
            self.pending.extend(split_frame(hdr, body))
        else:
            self.pending.extend(split(hdr, body))

    def drain_into(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Copy queued packets into `bufs[i][offset:]`, their lengths into `sizes[i]`."""
        fast = _impl.fast
        if fast is not None:
            delivered: int = fast.drain(self.pending, bufs, sizes, offset)
            return delivered
        count = 0
        pending = self.pending
        while pending and count < len(bufs):
            pkt = pending[0]
            buf = bufs[count]
            room = len(buf) - offset
            if room < len(pkt):
                if count:
                    break  # deliver what fits now; the rest waits for the next call
                raise ValueError(
                    f"bufs[0] holds {room} bytes after offset {offset} but the next packet has "
                    f"{len(pkt)}: give buffers of at least {len(pkt) + offset} bytes"
                )
            buf[offset : offset + len(pkt)] = pkt
            sizes[count] = len(pkt)
            pending.popleft()
            count += 1
        return count


class Receiver(RxQueue):
    """recv_multiple and packet-at-a-time reads of one device (BlockingIOError passes through).

    With the compiled core a super-packet is split straight into the caller's buffers; what
    does not fit stays in the read buffer with a cursor (`_next`) and goes out on the next call.
    `reads`, `supers` and `nbytes` count frames read, super-packets among them and packet
    bytes delivered (the relay's counters come from them).
    """

    def __init__(self, backend: DeviceBackend) -> None:
        super().__init__()
        self.backend = backend
        self._buf: bytearray | None = None
        self._frame_len = 0
        # the frame in _buf: the index of its next packet to deliver; -1 none; _UNPLANNED: all
        # of it, for the reference split (the compiled core left it alone)
        self._next = -1
        self.reads = 0
        self.supers = 0
        self.nbytes = 0

    def _read_frame(self) -> None:
        """One frame from the device, split into the queue (offload only)."""
        self.feed(self._read_raw(), vnet=True, layer=self.backend.layer)

    def _read_buffer(self) -> bytearray:
        """The buffer frames are read into (made on first use: a frame may be 64 KiB)."""
        if self._buf is None:
            self._buf = bytearray(max_frame_size(self.backend))
        return self._buf

    def _read_raw(self) -> memoryview:
        buf = self._read_buffer()
        n = self.backend.recv_into(buf)
        self.reads += 1
        if n > 1 and buf[1]:
            self.supers += 1
        self._frame_len = n
        return memoryview(buf)[:n]

    def _unsplit_rest(self) -> None:
        """The packets of the frame in the read buffer not delivered yet, into the queue (the
        reference split; a malformed frame raises its ValueError here)."""
        if self._next == -1 or self._buf is None:
            return
        rest = memoryview(self._buf)[: self._frame_len]
        skip, self._next = max(self._next, 0), -1  # _UNPLANNED: the whole frame
        queue = RxQueue()
        queue.feed(rest, vnet=True, layer=self.backend.layer)
        self.pending.extend(list(queue.pending)[skip:])

    def receive(
        self,
        bufs: Sequence[WritableBuffer] | PacketBatch,
        sizes: MutableSequence[int],
        offset: int,
        *,
        wait_fd: int = -2,
    ) -> int:
        """Queued packets first; else what the device has (at least one read).

        Into the caller's buffers when no offload; with offload, super-packets are split into
        them. A PacketBatch on an offload device with an fd is filled in one compiled call: it
        reads while frames are queued and their packets fit. wait_fd >= -1 (the relay's pump):
        that call waits for a frame itself, or until wait_fd is readable (InterruptedError);
        elsewhere BlockingIOError comes back as always.
        """
        batch = bufs if isinstance(bufs, PacketBatch) else None
        if batch is not None:
            batch.count = 0
            sizes, offset = batch.sizes, batch.offset
        before = self.nbytes
        count = self._receive(bufs, sizes, offset, wait_fd)
        if self.nbytes == before and count:
            self.nbytes += sum(sizes[:count])
        if batch is not None:
            batch.count = count
        return count

    def _receive(
        self,
        bufs: Sequence[WritableBuffer] | PacketBatch,
        sizes: MutableSequence[int],
        offset: int,
        wait_fd: int,
    ) -> int:
        fast = _impl.fast
        views: Sequence[WritableBuffer]
        dest: object
        if isinstance(bufs, PacketBatch):
            slot, dest, views = bufs.slot_size, bufs.arena, bufs.slots
        else:
            slot, dest, views = 0, bufs, bufs
        if self._next >= 0 and fast is not None:
            return self._split(fast, self._next, dest, views, sizes, offset, slot)
        self._unsplit_rest()
        if not self.pending:
            if not self.backend.frame_format.virtio:
                try:
                    got = self.backend.recv_batch(views, sizes, offset)
                except FrameTooLarge as big:
                    self.reads += big.delivered + 1
                    self.pending.append(big.frame)
                    if big.delivered:
                        return big.delivered
                else:
                    self.reads += got
                    return got
            elif fast is not None:
                if slot and hasattr(fast, "read_split"):
                    fd = frames.raw_fd(self.backend)
                    if fd is not None:
                        return self._read_split(fast, fd, dest, views, sizes, offset, slot, wait_fd)
                self._read_raw()
                self._next = 0
                return self._split(fast, 0, dest, views, sizes, offset, slot)
            else:
                self._read_frame()
        return self._drain(views, sizes, offset, slot)

    def _drain(
        self, views: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int, slot: int
    ) -> int:
        """drain_into, with a PacketBatch's own words when its first packet does not fit."""
        pending = self.pending
        if slot and pending and len(pending[0]) > slot - offset:
            _too_small(slot, views, offset, len(pending[0]))
        return self.drain_into(views, sizes, offset)

    def _reference_split(
        self, views: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int, slot: int
    ) -> int:
        """The frame the compiled core left alone (_UNPLANNED), split by the reference code,
        which words the error of a malformed one; its packets delivered from the queue."""
        self._unsplit_rest()
        return self._drain(views, sizes, offset, slot)

    def _read_split(
        self,
        fast: Any,
        fd: int,
        arena: object,
        views: Sequence[WritableBuffer],
        sizes: MutableSequence[int],
        offset: int,
        slot: int,
        wait_fd: int,
    ) -> int:
        """Reads and their split into an arena in a single compiled call (GIL released once)."""
        tap = self.backend.layer is Layer.L2
        done = fast.read_split(fd, self._read_buffer(), arena, slot, sizes, offset, tap, wait_fd)
        frames_read, self._frame_len, delivered, self._next, need, supers, nbytes = done
        if not frames_read:
            raise InterruptedError("woken by the wait fd before a frame came")
        self.reads += frames_read
        self.supers += supers
        self.nbytes += nbytes
        if delivered < 0:  # the only frame read is malformed or unusual
            return self._reference_split(views, sizes, offset, slot)
        if not delivered:
            _too_small(slot, views, offset, need)
        count: int = delivered
        return count

    def _split(
        self,
        fast: Any,
        start: int,
        dest: object,
        views: Sequence[WritableBuffer],
        sizes: MutableSequence[int],
        offset: int,
        slot: int,
    ) -> int:
        """Packets of the frame in the read buffer from `start` on, into the caller's buffers."""
        assert self._buf is not None
        frame = memoryview(self._buf)[: self._frame_len]
        tap = self.backend.layer is Layer.L2
        done = fast.split_into(frame, start, dest, sizes, offset, slot, tap)
        if done is None:  # malformed or unusual
            self._next = _UNPLANNED
            return self._reference_split(views, sizes, offset, slot)
        delivered, self._next, need = done
        if not delivered:
            _too_small(slot, views, offset, need)
        count: int = delivered
        return count

    def read_packets(self) -> list[bytes]:
        """Everything queued, or what one read brings, as packets (no copy into caller buffers).

        For the relay pump: a super-packet becomes its segments, straight from split().
        """
        self._unsplit_rest()
        if self.pending:
            out = list(self.pending)
            self.pending.clear()
            return out
        if not self.backend.frame_format.virtio:
            return [frames.read(self.backend)]
        return packets_of(self._read_raw(), self.backend.layer is Layer.L2)

    def next_packet(self) -> bytes:
        """One packet (frame for TAP): queued ones first."""
        self._unsplit_rest()
        pending = self.pending
        if pending:
            return pending.popleft()
        if not self.backend.frame_format.virtio:
            return frames.read(self.backend)
        while not pending:  # a read can bring nothing to deliver only if it is empty
            pending.extend(self.read_packets())
        return pending.popleft()


def _too_small(slot: int, views: Sequence[WritableBuffer], offset: int, need: int) -> None:
    """The next packet does not fit the first buffer: it waits, and the caller is told why."""
    room = (slot or len(memoryview(views[0]))) - offset
    if slot:
        raise ValueError(
            f"the batch's packets hold up to {room} bytes but the next packet has {need}: "
            f"make the batch with PacketBatch(packet_size={need}) or more"
        )
    raise ValueError(
        f"bufs[0] holds {room} bytes after offset {offset} but the next packet has "
        f"{need}: give buffers of at least {need + offset} bytes"
    )


def check_batch_args(
    bufs: Sequence[object] | PacketBatch,
    sizes: Sequence[int] | None,
    offset: int | None,
    *,
    vnet: bool,
    send: bool,
) -> int:
    """Check a recv_multiple/send_multiple call before any I/O; the offset to use."""
    if isinstance(bufs, PacketBatch):
        if sizes is not None or offset not in (None, bufs.offset):
            raise ValueError(
                "a PacketBatch carries its own sizes and offset: call recv_multiple(batch) "
                "or send_multiple(table, batch)"
            )
        offset = bufs.offset
        if send and not bufs.count:
            raise ValueError("the batch holds no packets: fill it with recv_multiple(batch) or append()")
    else:
        offset = 0 if offset is None else offset
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset: expected a non-negative int, got {offset!r}")
        if not bufs:
            raise ValueError("bufs is empty")
        if not send and sizes is None:
            raise ValueError("sizes: give a list with one entry per buffer (or pass a PacketBatch)")
        if sizes is not None and len(sizes) < len(bufs):
            raise ValueError(f"sizes has {len(sizes)} entries for {len(bufs)} buffers")
    if send and vnet and offset < VIRTIO_NET_HDR_LEN:
        raise ValueError(
            f"offset {offset}: with offload each buffer keeps room for the "
            f"{VIRTIO_NET_HDR_LEN}-byte virtio-net header in front (offset >= {VIRTIO_NET_HDR_LEN})"
        )
    return offset


def frames_to_send(
    bufs: Sequence[Bytes] | PacketBatch,
    offset: int,
    *,
    vnet: bool,
    layer: Layer,
    udp_gro: bool,
    table: GROTable | None,
) -> list[Bytes]:
    """What to write for a batch: the packets themselves, or coalesced frames with offload.

    The caller's buffers are never modified.
    """
    fast = _impl.fast
    if isinstance(bufs, PacketBatch):
        if vnet and layer is Layer.L3 and fast is not None:  # one pass over the arena
            merged = fast.coalesce_slots(
                bufs.arena, bufs.slot_size, bufs.sizes, bufs.count, udp_gro, bufs.offset
            )
            return [frame for _, frame in merged]
        bufs, offset = list(bufs), 0
    if vnet and layer is Layer.L3 and fast is not None:  # the compiled core reads past offset itself
        return [frame for _, frame in fast.coalesce_ip(bufs, udp_gro, offset)]
    packets: list[Bytes] = [memoryview(b)[offset:] for b in bufs] if offset else list(bufs)
    if not vnet:
        return packets
    # TAP: coalesce() merges only untagged IPv4/IPv6 frames; VLAN-tagged ones go out alone
    l2 = 14 if layer is Layer.L2 else 0
    return list(coalesce(packets, udp_gro=udp_gro, table=table, l2_len=l2))


def batch_frames(
    backend: DeviceBackend, bufs: Sequence[Bytes] | PacketBatch, offset: int, table: GROTable | None
) -> list[Bytes]:
    """frames_to_send() with the device's own frame format."""
    fmt = backend.frame_format
    return frames_to_send(
        bufs, offset, vnet=fmt.virtio, layer=backend.layer, udp_gro=fmt.udp_gso, table=table
    )


def send_arena(
    backend: DeviceBackend, batch: PacketBatch, *, stop_fd: int = -2
) -> tuple[BatchResult, bool] | None:
    """send_multiple(table, batch) on an offload TUN device with an fd: coalesce and write in
    one compiled call (GIL released once). (result, blocked); None where it does not apply.

    blocked: the device was full (stop_fd -2) or stop_fd turned readable while waiting for room
    (stop_fd >= -1 waits; -1: nothing to stop the wait); the rest of the batch is unsent.
    """
    fast = _impl.fast
    fmt = backend.frame_format
    if fast is None or not fmt.virtio or backend.layer is not Layer.L3 or not hasattr(fast, "coalesce_write"):
        return None
    fd = frames.raw_fd(backend)
    if fd is None:
        return None
    consumed, written, blocked, errnos = fast.coalesce_write(
        fd, batch.arena, batch.slot_size, batch.sizes, batch.count, fmt.udp_gso, batch.offset, stop_fd
    )
    errors = [OSError(code, os.strerror(code)) for code in errnos]
    return BatchResult(frames=consumed, bytes=written, errors=errors), bool(blocked)
