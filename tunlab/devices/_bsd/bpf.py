"""BPF descriptors on macOS and the BSDs: open one, attach it to an interface, read its records.

The feth TAP reads its frames this way, and tunlab.testing._capture records any interface this
way where there is no AF_PACKET. Each OS limits a descriptor to one direction differently
(abi.BPF_DIRECTIONS); records are walked by their own header length (wire.bpf_records).
"""

from __future__ import annotations

import errno
import os
import struct

from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.devices._bsd.system import System
from tunlab.errors import DeviceError, DevicePermissionError

BPF_BUFFER = 1 << 17


def _u32(value: int) -> bytearray:
    return bytearray(struct.pack("I", value))


def open_device(sys: System) -> int:
    """A free BPF descriptor: the cloning /dev/bpf where the OS has one, else /dev/bpfN."""
    names = [] if sys.abi.os == "darwin" else ["/dev/bpf"]
    names += [f"/dev/bpf{n}" for n in range(256)]
    for path in names:
        try:
            return sys.open(path, os.O_RDWR)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                continue
            if exc.errno == errno.ENOENT:
                if path == "/dev/bpf":
                    continue
                break
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise DevicePermissionError(f"opening {path} needs root: run as root (sudo)") from None
            raise
    raise DeviceError("no free /dev/bpf device: close other capture programs (tcpdump, Wireshark)")


def attach(
    sys: System,
    interface: str,
    *,
    direction: str | None = None,
    complete_headers: bool = False,
    promiscuous: bool = False,
) -> tuple[int, int]:
    """A BPF descriptor on interface in immediate mode; (fd, buffer size to read with).

    The buffer size is set before the interface (the kernel ignores it afterwards). direction
    "in" or "out" limits what it sees (DeviceError where the OS cannot); None sees both.
    """
    abi = sys.abi
    fd = open_device(sys)
    try:
        sys.ioctl(fd, abi.BIOCSBLEN, _u32(BPF_BUFFER))
        sys.ioctl(fd, abi.BIOCIMMEDIATE, _u32(1))
        if direction is not None:
            d = A.BPF_DIRECTIONS[abi.os]
            value = d.incoming if direction == "in" else d.outgoing
            if value is None:
                raise DeviceError(f"BPF on {abi.os} cannot see only {direction}going packets")
            sys.ioctl(fd, d.request, _u32(value))
        sys.ioctl(fd, abi.BIOCSETIF, wire.ifreq(abi, interface))
        if complete_headers:
            sys.ioctl(fd, A.BIOCSHDRCMPLT, _u32(1))
        if promiscuous:
            sys.ioctl(fd, abi.BIOCPROMISC, 0)
        out = sys.ioctl(fd, abi.BIOCGBLEN, bytearray(4))
        assert isinstance(out, bytearray)
        blen = int(struct.unpack("I", out)[0])
    except OSError as exc:
        sys.close(fd)
        raise DeviceError(f"setting up BPF on {interface} failed: {exc.strerror or exc}") from None
    except BaseException:
        sys.close(fd)
        raise
    return fd, blen


def datalink(sys: System, fd: int) -> int:
    """The descriptor's data-link type (DLT_NULL, DLT_EN10MB, DLT_LOOP, ...)."""
    out = sys.ioctl(fd, A.BIOCGDLT, bytearray(4))
    assert isinstance(out, bytearray)
    return int(struct.unpack("I", out)[0])


def link_header(os_name: str, dlt: int) -> int | None:
    """Bytes before the IP header for a layer-3 data-link type (None: Ethernet, keep frames)."""
    if dlt == A.DLT_EN10MB:
        return None
    if dlt in (A.DLT_NULL, A.DLT_LOOP.get(os_name, A.DLT_LOOP_DEFAULT)):
        return 4
    raise DeviceError(f"BPF data-link type {dlt} is not one tunlab reads (DLT_NULL, DLT_LOOP, DLT_EN10MB)")


class DirectionalTap:
    """BPF descriptors on one interface for a capture: one per direction where the OS can filter
    directions, else (macOS) an incoming-only one and one that sees both. read() gives each
    record's frame with the TUN address-family word dropped, tagged "in", "out" or None (both)."""

    def __init__(self, sys: System, interface: str) -> None:
        self.sys = sys
        second = "out" if A.BPF_DIRECTIONS[sys.abi.os].outgoing is not None else None
        self.directions: dict[int, str | None] = {}
        self._sizes: dict[int, int] = {}
        try:
            for direction in ("in", second):
                fd, size = attach(sys, interface, direction=direction)
                self.directions[fd], self._sizes[fd] = direction, size
            self.strip = link_header(sys.abi.os, datalink(sys, next(iter(self.directions))))
        except BaseException:
            self.close()
            raise
        self.l2 = self.strip is None  # Ethernet frames, kept whole
        self._buf = bytearray(max(self._sizes.values()))

    @property
    def fds(self) -> list[int]:
        return list(self.directions)

    def read(self, fd: int) -> list[tuple[str | None, bytes]]:
        n = self.sys.read_into(fd, memoryview(self._buf)[: self._sizes[fd]])
        direction = self.directions[fd]
        cut = self.strip or 0
        return [(direction, frame[cut:]) for frame in wire.bpf_records(self.sys.abi, self._buf, n)]

    def close(self) -> None:
        for fd in self.directions:
            self.sys.close(fd)
        self.directions = {}
