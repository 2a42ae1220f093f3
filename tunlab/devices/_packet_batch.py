"""PacketBatch: caller-owned memory for recv_multiple/send_multiple, one arena for a whole batch.

A batch is `capacity` fixed-size slots in one buffer, a headroom of `offset` bytes in front
of each packet and an array of their lengths — wireguard-go's `Read(bufs, sizes, offset)` with
the buffers laid end to end. A device reads straight into it (a super-packet is split by the
compiled core into the slots) and writes from it (coalesced in one pass), so a relay loop
allocates nothing per packet.
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Iterator

from tunlab.devices.offload._virtio import IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN

# the largest IP packet, and room for an Ethernet header with two VLAN tags (TAP)
DEFAULT_PACKET_SIZE = 65535 + 22
_ALIGN = 64


class PacketBatch:
    """`capacity` packets of up to `packet_size` bytes each, `offset` bytes of headroom in front.

    `len(batch)` is how many packets it holds now; `batch[i]` is packet i (a writable
    memoryview); `batch.sizes[i]` its length. recv_multiple(batch) fills it; send_multiple(table,
    batch) writes what it holds; append() and clear() build one by hand.
    """

    __slots__ = ("_slots", "arena", "capacity", "count", "offset", "packet_size", "sizes", "slot_size")

    def __init__(
        self,
        capacity: int = IDEAL_BATCH_SIZE,
        *,
        packet_size: int = DEFAULT_PACKET_SIZE,
        offset: int = VIRTIO_NET_HDR_LEN,
    ) -> None:
        checks = (("capacity", capacity, 1), ("packet_size", packet_size, 1), ("offset", offset, 0))
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"PacketBatch {name}: expected an int >= {low}, got {value!r}")
        self.capacity = capacity
        self.packet_size = packet_size
        self.offset = offset
        self.slot_size = -(-(offset + packet_size) // _ALIGN) * _ALIGN
        # anonymous memory: pages are only made when a packet lands in them (128 slots of 64 KiB
        # cost what the packets use, not 8 MiB up front as a zero-filled bytearray would)
        self.arena = mmap.mmap(-1, capacity * self.slot_size)
        self.sizes = array("I", bytes(4 * capacity))
        self.count = 0
        whole = memoryview(self.arena)
        self._slots = [whole[i * self.slot_size : (i + 1) * self.slot_size] for i in range(capacity)]

    @property
    def slots(self) -> list[memoryview]:
        """Each slot whole (headroom included): the buffers a list-based call would take."""
        return self._slots

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> memoryview:
        if not -self.count <= index < self.count:
            raise IndexError(f"packet {index}: the batch holds {self.count}")
        index %= self.count
        return self._slots[index][self.offset : self.offset + self.sizes[index]]

    def __iter__(self) -> Iterator[memoryview]:
        return (self[i] for i in range(self.count))

    def room(self, index: int) -> memoryview:
        """Slot `index` after the headroom, all packet_size bytes of it (to build a packet in)."""
        return self._slots[index][self.offset : self.offset + self.packet_size]

    def append(self, packet: bytes | bytearray | memoryview) -> None:
        """Copy a packet into the next free slot."""
        if self.count >= self.capacity:
            raise ValueError(f"the batch is full ({self.capacity} packets): send it or clear() it")
        n = len(packet)
        if n > self.packet_size:
            raise ValueError(
                f"a {n}-byte packet does not fit slots of {self.packet_size} bytes: "
                f"make the batch with PacketBatch(packet_size={n})"
            )
        start = self.offset
        self._slots[self.count][start : start + n] = packet
        self.sizes[self.count] = n
        self.count += 1

    def clear(self) -> None:
        """Hold no packets (the memory stays for the next batch)."""
        self.count = 0

    def __repr__(self) -> str:
        return (
            f"PacketBatch({self.count}/{self.capacity} packets, packet_size={self.packet_size}, "
            f"offset={self.offset})"
        )
