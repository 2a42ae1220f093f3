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

from tunlab.devices._bsd.abi import AF_INET, AF_LINK, AF_SYSTEM, Abi

AF_SYS_CONTROL = 2  # bsd/sys/sys_domain.h: the kernel-control address's ss_sysaddr


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
        # NetBSD's <stdlib.h> renames devname to __devname50 (64-bit dev_t); the plain symbol is
        # the old 32-bit compat entry point
        devname = getattr(self.libc, "__devname50" if self.abi.os == "netbsd" else "devname")
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
        """macOS kernel-control connect (unit 0: the kernel picks the next free one), by libc:
        a kernel-control fd cannot be wrapped in socket.socket(fileno=fd), because CPython
        learns the family with getsockname (EOPNOTSUPP on these sockets) and the protocol with
        SO_PROTOCOL (macOS has none), and then connects as AF_INET."""
        self._sockcall("connect", fd, sockaddr_ctl(self.control_id(fd, name), unit))

    def control_id(self, fd: int, name: str) -> int:
        from tunlab.devices._bsd.abi import CTLIOCGINFO

        info = bytearray(100)
        info[4 : 4 + len(name)] = name.encode()
        out = self.ioctl(fd, CTLIOCGINFO, info)
        assert isinstance(out, bytearray)
        return int(struct.unpack_from("I", out, 0)[0])

    def getsockopt(self, fd: int, level: int, option: int, size: int) -> bytes:
        """getsockopt(2) by libc (no socket.socket around an fd CPython cannot describe)."""
        buf = ctypes.create_string_buffer(size)
        length = ctypes.c_uint32(size)
        if self.libc.getsockopt(fd, level, option, buf, ctypes.byref(length)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"getsockopt: {os.strerror(err)}")
        return buf.raw[: length.value]

    def setsockopt_int(self, fd: int, level: int, option: int, value: int) -> None:
        """setsockopt(2) of an int option by libc (level and option as the OS numbers them)."""
        arg = ctypes.c_int(value)
        if self.libc.setsockopt(fd, level, option, ctypes.byref(arg), ctypes.sizeof(arg)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setsockopt: {os.strerror(err)}")

    def if_nametoindex(self, name: str) -> int:
        return socket.if_nametoindex(name)

    # ---- getifaddrs -----------------------------------------------------------------------------
    def getifaddrs(self) -> list[IfAddr]:
        """Every interface address (IPv4, IPv6, AF_LINK MACs), decoded from the OS's sockaddrs."""
        out = []
        for raw in self.raw_ifaddrs():
            entry = decode_ifaddr(self.abi, raw)
            if entry is not None:
                out.append(entry)
        return out

    def raw_ifaddrs(self) -> list[RawIfAddr]:
        """getifaddrs(3) as the OS gives it: each entry's sockaddrs as bytes."""

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
                out.append(
                    RawIfAddr(
                        (entry.ifa_name or b"").decode(),
                        int(entry.ifa_flags),
                        _sockaddr_bytes(entry.ifa_addr),
                        _sockaddr_bytes(entry.ifa_netmask),
                        _sockaddr_bytes(entry.ifa_dstaddr),
                    )
                )
                node = entry.ifa_next
        finally:
            self.libc.freeifaddrs(head)
        return out


@dataclass(frozen=True)
class RawIfAddr:
    """One getifaddrs entry with its sockaddrs as the kernel wrote them."""

    name: str
    flags: int
    addr: bytes
    netmask: bytes = b""
    destination: bytes = b""


def decode_ifaddr(abi: Abi, raw: RawIfAddr) -> IfAddr | None:
    """An IfAddr from a raw entry (None for a family tunlab does not read)."""
    fam, addr, index = decode_sockaddr(abi, raw.addr)
    if not fam:
        return None
    _, mask, _ = decode_sockaddr(abi, raw.netmask, fam)
    _, dst, _ = decode_sockaddr(abi, raw.destination, fam)
    return IfAddr(raw.name, raw.flags, fam, addr, mask, dst, index)


def sockaddr_ctl(ctl_id: int, unit: int) -> bytes:
    """struct sockaddr_ctl (sys_domain.h): sc_len 32, AF_SYSTEM, AF_SYS_CONTROL, the control's
    id, the unit (0: the next free one; utunN is unit N+1), five reserved words."""
    return struct.pack("BBHII5I", 32, AF_SYSTEM, AF_SYS_CONTROL, ctl_id, unit, 0, 0, 0, 0, 0)


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
        return fam, _ipv6_text(raw), 0
    if fam == AF_LINK and len(raw) >= 8:
        index = struct.unpack_from("H", raw, 2)[0]
        nlen, alen = raw[5], raw[6]
        mac = raw[8 + nlen : 8 + nlen + alen]
        return fam, ":".join(f"{b:02x}" for b in mac) if alen == 6 else None, index
    return fam, None, 0


def _ipv6_text(raw: bytes) -> str:
    """A sockaddr_in6's address, its scope as '%N'. macOS, OpenBSD and NetBSD (KAME) hand
    link-local addresses out with the scope embedded in bytes 2-3 (fe80:7::1) and sin6_scope_id
    often 0: the embedded scope is moved into the scope id, as their ifconfig does."""
    packed = bytearray(raw[8:24].ljust(16, b"\0"))
    scope = struct.unpack_from("I", raw, 24)[0] if len(raw) >= 28 else 0
    link_scoped = packed[0] == 0xFE and packed[1] & 0xC0 == 0x80  # fe80::/10
    link_scoped = link_scoped or (packed[0] == 0xFF and packed[1] & 0x0F in (1, 2))  # ff01::, ff02::
    if link_scoped:
        embedded = int.from_bytes(packed[2:4], "big")
        if embedded:
            scope = scope or embedded
            packed[2:4] = b"\0\0"
    text = str(ipaddress.IPv6Address(bytes(packed)))
    return f"{text}%{scope}" if scope else text
