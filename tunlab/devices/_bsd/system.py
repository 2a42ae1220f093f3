"""The operating-system calls the BSD-family backends make, behind one small interface.

Backends call `self.sys.ioctl(...)`, `self.sys.socket(...)` and so on, never the os or socket
modules directly, so a test double can record every call with its bytes and answer as the
kernel would — the backends' create → configure → I/O → close sequences and their rollbacks
are checked on Linux, and the same code runs for real on macOS and the BSDs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from tunlab.devices._bsd.abi import AF_INET, AF_LINK, Abi


@dataclass(frozen=True)
class IfAddr:
    """One getifaddrs entry: an interface name, flags and one address (or its MAC)."""

    name: str
    flags: int
    family: int
    address: str | None  # IP address text, or the MAC for AF_LINK
    netmask: str | None = None
    destination: str | None = None
    index: int = 0


class System:
    """The real calls (used on macOS and the BSDs)."""

    def __init__(self, abi: Abi) -> None:
        self.abi = abi
        self._libc: Any = None

    @property
    def libc(self) -> Any:
        if self._libc is None:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return self._libc

    # ---- fds --------------------------------------------------------------------------------
    def socket(self, family: int, kind: int, proto: int = 0) -> int:
        s = socket.socket(family, kind, proto)
        return s.detach()

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: bytearray | int) -> bytearray | int:
        if isinstance(arg, int):
            return int(fcntl.ioctl(fd, request, arg))
        fcntl.ioctl(fd, request, arg, True)
        return arg

    def read_into(self, fd: int, buf: bytearray | memoryview) -> int:
        return os.readv(fd, [buf])

    def readv(self, fd: int, bufs: list[bytearray | memoryview]) -> int:
        return os.readv(fd, bufs)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        return os.write(fd, data)

    def writev(self, fd: int, parts: list[bytes | bytearray | memoryview]) -> int:
        return os.writev(fd, parts)

    def set_blocking(self, fd: int, blocking: bool) -> None:
        os.set_blocking(fd, blocking)

    def get_blocking(self, fd: int) -> bool:
        return os.get_blocking(fd)

    def pid(self) -> int:
        return os.getpid()

    def if_exists(self, name: str) -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def device_name(self, fd: int) -> str:
        """The /dev node an fd has open ('tun3'), by fstat and libc devname(3)."""
        rdev = os.fstat(fd).st_rdev
        devname = self.libc.devname
        devname.restype = ctypes.c_char_p
        devname.argtypes = [ctypes.c_int32 if self.abi.os == "openbsd" else ctypes.c_uint64, ctypes.c_uint32]
        raw: bytes | None = devname(rdev, 0o020000)  # S_IFCHR
        if not raw:
            raise OSError(f"fd {fd} is not a character device")
        return os.path.basename(raw.decode())

    # ---- addresses CPython's socket module cannot express --------------------------------------
    def bind_raw(self, fd: int, addr: bytes) -> None:
        self._sockcall("bind", fd, addr)

    def connect_raw(self, fd: int, addr: bytes) -> None:
        self._sockcall("connect", fd, addr)

    def _sockcall(self, name: str, fd: int, addr: bytes) -> None:
        buf = ctypes.create_string_buffer(addr, len(addr))
        if getattr(self.libc, name)(fd, buf, len(addr)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}: {os.strerror(err)}")

    def connect_control(self, fd: int, name: str, unit: int) -> None:
        """macOS kernel-control connect: by name (unit 0: the kernel picks) or an explicit unit."""
        s = socket.socket(fileno=fd)
        try:
            if unit:
                ctl_id = self.control_id(fd, name)
                s.connect((ctl_id, unit))
            else:
                s.connect(name)
        finally:
            s.detach()

    def control_id(self, fd: int, name: str) -> int:
        from tunlab.devices._bsd.abi import CTLIOCGINFO

        info = bytearray(100)
        info[4 : 4 + len(name)] = name.encode()
        fcntl.ioctl(fd, CTLIOCGINFO, info, True)
        return int(struct.unpack_from("I", info, 0)[0])

    def getsockopt(self, fd: int, level: int, option: int, size: int) -> bytes:
        s = socket.socket(fileno=fd)
        try:
            return s.getsockopt(level, option, size)
        finally:
            s.detach()

    def if_nametoindex(self, name: str) -> int:
        return socket.if_nametoindex(name)

    # ---- getifaddrs -----------------------------------------------------------------------------
    def getifaddrs(self) -> list[IfAddr]:
        """Every interface address, via libc getifaddrs (IPv4, IPv6 and AF_LINK MACs)."""

        class IfAddrs(ctypes.Structure):
            pass

        IfAddrs._fields_ = [
            ("ifa_next", ctypes.POINTER(IfAddrs)),
            ("ifa_name", ctypes.c_char_p),
            ("ifa_flags", ctypes.c_uint),
            ("ifa_addr", ctypes.c_void_p),
            ("ifa_netmask", ctypes.c_void_p),
            ("ifa_dstaddr", ctypes.c_void_p),
            ("ifa_data", ctypes.c_void_p),
        ]
        head = ctypes.POINTER(IfAddrs)()
        if self.libc.getifaddrs(ctypes.byref(head)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"getifaddrs: {os.strerror(err)}")
        out = []
        try:
            node = head
            while node:
                entry = node.contents
                name = (entry.ifa_name or b"").decode()
                fam, addr, index = decode_sockaddr(self.abi, _sockaddr_bytes(entry.ifa_addr))
                _, mask, _ = decode_sockaddr(self.abi, _sockaddr_bytes(entry.ifa_netmask), fam)
                _, dst, _ = decode_sockaddr(self.abi, _sockaddr_bytes(entry.ifa_dstaddr), fam)
                if fam:
                    out.append(IfAddr(name, int(entry.ifa_flags), fam, addr, mask, dst, index))
                node = entry.ifa_next
        finally:
            self.libc.freeifaddrs(head)
        return out


def _sockaddr_bytes(ptr: int | None) -> bytes:
    if not ptr:
        return b""
    length = ctypes.c_uint8.from_address(ptr).value or 16
    return ctypes.string_at(ptr, length)


def decode_sockaddr(abi: Abi, raw: bytes, family: int = 0) -> tuple[int, str | None, int]:
    """(family, address text or MAC, interface index for AF_LINK) of a BSD sockaddr.

    A netmask may come with sa_family 0: family says what it belongs to."""
    if len(raw) < 2:
        return 0, None, 0
    fam = raw[1] or family
    if fam == AF_INET and len(raw) >= 8:
        return fam, str(ipaddress.IPv4Address(raw[4:8].ljust(4, b"\0"))), 0
    if fam == abi.af_inet6 and len(raw) >= 8:
        return fam, str(ipaddress.IPv6Address(raw[8:24].ljust(16, b"\0"))), 0
    if fam == AF_LINK and len(raw) >= 8:
        index = struct.unpack_from("H", raw, 2)[0]
        nlen, alen = raw[5], raw[6]
        mac = raw[8 + nlen : 8 + nlen + alen]
        return fam, ":".join(f"{b:02x}" for b in mac) if alen == 6 else None, index
    return fam, None, 0
