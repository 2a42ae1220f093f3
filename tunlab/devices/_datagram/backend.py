"""DatagramDevice: a connected UDP socket as a device whose frames are datagrams.

It is the far end of a link whose other end is on another host: a relay moves frames between
a node's TUN/TAP device and this socket exactly as between two devices (the compiled pump
reads and writes both fds). The frame format is the partner device's, so a super-packet with
its virtio-net header crosses as one datagram and is written whole on the other host. A frame
larger than a datagram can carry (the partner's GSO size is set so none is made) is split
into packets, each sent alone, never dropped for its size.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import ClassVar

from tunlab.devices._backend import Bytes, DeviceBackend, FrameFormat, Handoff, WritableBuffer, handoff_spec
from tunlab.devices._capabilities import Capability
from tunlab.devices._layer import Layer
from tunlab.devices._readiness import PollTarget, Readiness
from tunlab.errors import DeviceClosedError

# the largest UDP payload: 65,535 less the UDP header, and the IPv4 header (IPv6's payload
# length does not count its own header)
MAX_DATAGRAM = {socket.AF_INET: 65_535 - 8 - 20, socket.AF_INET6: 65_535 - 8}
_CAPABILITIES = frozenset({Capability.FD, Capability.HANDOFF})


class DatagramDevice(DeviceBackend):
    """Frames as datagrams of one connected UDP socket (owned: closed with the device)."""

    platform: ClassVar[str] = "datagram"

    def __init__(self, sock: socket.socket, layer: Layer, frame_format: FrameFormat) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"a DatagramDevice needs a datagram socket, got {sock.type!r}")
        super().__init__(layer, owned=True, capabilities=_CAPABILITIES)
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self.frame_format = FrameFormat(
            prefix=frame_format.prefix,
            virtio=frame_format.virtio,
            tcp_gso=frame_format.tcp_gso,
            udp_gso=frame_format.udp_gso,
            fd_frames=True,  # read() and write() of a connected datagram socket move one frame
        )
        self._nonblocking = not sock.getblocking()
        self._readiness = Readiness(PollTarget(self._fd), PollTarget(self._fd, writable=True))

    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        return _CAPABILITIES

    @classmethod
    def from_handoff(cls, fds: Sequence[int], spec: dict[str, str | int | bool]) -> DatagramDevice:
        """The same socket in a relay worker process (its fd passed by the parent)."""
        sock = socket.socket(fileno=fds[0])
        fmt = FrameFormat(
            prefix=int(spec["prefix"]),
            virtio=bool(spec["virtio"]),
            tcp_gso=bool(spec["tcp_gso"]),
            udp_gso=bool(spec["udp_gso"]),
        )
        return cls(sock, Layer(str(spec["layer"])), fmt)

    def handoff(self) -> Handoff:
        fmt = self.frame_format
        return Handoff((self._check(),), handoff_spec(self, prefix=fmt.prefix, virtio=fmt.virtio))

    @property
    def closed(self) -> bool:
        return self._sock is None

    def _check(self) -> int:
        if self._sock is None:
            raise DeviceClosedError()
        return self._fd

    def fileno(self) -> int:
        return self._check()

    def recv_into(self, buffer: WritableBuffer) -> int:
        return os.readv(self._check(), (buffer,))

    def send(self, data: Bytes) -> int:
        fd = self._check()
        try:
            return os.write(fd, data)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE or not self.frame_format.virtio:
                raise
        return self._send_split(fd, data)

    def _send_split(self, fd: int, data: Bytes) -> int:
        """A super-packet too large for one datagram: its packets, one datagram each."""
        from tunlab.devices.offload._gso import packets_of

        plain = bytes(self.frame_format.prefix)  # GSO_NONE, checksums complete
        for packet in packets_of(data, self.layer is Layer.L2):
            os.write(fd, plain + packet)
        return len(data)

    def readiness(self) -> Readiness:
        self._check()
        return self._readiness

    def _set_blocking_mode(self, nonblocking: bool) -> None:
        os.set_blocking(self._check(), not nonblocking)

    def close(self, *, release: bool = False) -> int | None:
        sock, self._sock = self._sock, None
        if sock is None:
            if release:
                raise DeviceClosedError()
            return None
        if release:
            return sock.detach()
        sock.close()
        return None
