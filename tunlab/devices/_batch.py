"""recv_multiple/send_multiple: the steps around one read or a batch of writes, over a backend.

Shared by the sync and async devices and Framed. Without offload a read lands straight in the
caller's buffer (one copy, kernel to caller). With offload a read brings a super-packet that
is split into packets kept in a queue, so nothing is lost when the caller's buffers run out;
a batch to send is coalesced into super-packets first. The caller's buffers are never modified.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableSequence, Sequence

from tunlab.devices import _frames as frames
from tunlab.devices._backend import Bytes, DeviceBackend, FrameTooLarge, WritableBuffer, max_frame_size
from tunlab.devices._layer import Layer
from tunlab.devices.offload import GROTable, VirtioNetHdr, coalesce
from tunlab.devices.offload import _impl as _impl
from tunlab.devices.offload._gso import split, split_frame
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN


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
    """recv_multiple and packet-at-a-time reads of one device (BlockingIOError passes through)."""

    def __init__(self, backend: DeviceBackend) -> None:
        super().__init__()
        self.backend = backend
        self._buf: bytearray | None = None

    def _read_frame(self) -> None:
        """One frame from the device, split into the queue (offload only)."""
        if self._buf is None:
            self._buf = bytearray(max_frame_size(self.backend))
        n = self.backend.recv_into(self._buf)
        self.feed(memoryview(self._buf)[:n], vnet=True, layer=self.backend.layer)

    def receive(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Queued packets first; else one read (into the caller's buffers when no offload)."""
        if not self.pending:
            if not self.backend.frame_format.virtio:
                try:
                    return self.backend.recv_batch(bufs, sizes, offset)
                except FrameTooLarge as big:
                    self.pending.append(big.frame)
                    if big.delivered:
                        return big.delivered
            else:
                self._read_frame()
        return self.drain_into(bufs, sizes, offset)

    def read_packets(self) -> list[bytes]:
        """Everything queued, or what one read brings, as packets (no copy into caller buffers).

        For the relay pump: a super-packet becomes its segments, straight from split().
        """
        if self.pending:
            out = list(self.pending)
            self.pending.clear()
            return out
        if not self.backend.frame_format.virtio:
            return [frames.read(self.backend)]
        if self._buf is None:
            self._buf = bytearray(max_frame_size(self.backend))
        n = self.backend.recv_into(self._buf)
        if n <= VIRTIO_NET_HDR_LEN:
            raise ValueError(f"read {n} bytes: shorter than a virtio-net header")
        frame = memoryview(self._buf)[:n]
        hdr = VirtioNetHdr.decode(frame)
        body = frame[VIRTIO_NET_HDR_LEN:]
        return split_frame(hdr, body) if self.backend.layer is Layer.L2 else split(hdr, body)

    def next_packet(self) -> bytes:
        """One packet (frame for TAP): queued ones first."""
        pending = self.pending
        if pending:
            return pending.popleft()
        if not self.backend.frame_format.virtio:
            return frames.read(self.backend)
        while not pending:  # a read can bring nothing to deliver only if it is empty
            pending.extend(self.read_packets())
        return pending.popleft()


def check_batch_args(
    bufs: Sequence[object], sizes: Sequence[int] | None, offset: int, *, vnet: bool, send: bool
) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset: expected a non-negative int, got {offset!r}")
    if not bufs:
        raise ValueError("bufs is empty")
    if sizes is not None and len(sizes) < len(bufs):
        raise ValueError(f"sizes has {len(sizes)} entries for {len(bufs)} buffers")
    if send and vnet and offset < VIRTIO_NET_HDR_LEN:
        raise ValueError(
            f"offset {offset}: with offload each buffer keeps room for the "
            f"{VIRTIO_NET_HDR_LEN}-byte virtio-net header in front (offset >= {VIRTIO_NET_HDR_LEN})"
        )


def frames_to_send(
    bufs: Sequence[Bytes],
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
    if vnet and layer is Layer.L3 and fast is not None:  # the compiled core reads past offset itself
        return [frame for _, frame in fast.coalesce_ip(bufs, udp_gro, offset)]
    packets: list[Bytes] = [memoryview(b)[offset:] for b in bufs] if offset else list(bufs)
    if not vnet:
        return packets
    # TAP: coalesce() merges only untagged IPv4/IPv6 frames; VLAN-tagged ones go out alone
    l2 = 14 if layer is Layer.L2 else 0
    return list(coalesce(packets, udp_gro=udp_gro, table=table, l2_len=l2))


def batch_frames(
    backend: DeviceBackend, bufs: Sequence[Bytes], offset: int, table: GROTable | None
) -> list[Bytes]:
    """frames_to_send() with the device's own frame format."""
    fmt = backend.frame_format
    return frames_to_send(
        bufs, offset, vnet=fmt.virtio, layer=backend.layer, udp_gro=fmt.udp_gso, table=table
    )
