"""The real System class (the OS calls of the macOS/BSD backends) run on Linux against a libc
double and a socket module that behaves as CPython does on macOS: what the backend doubles
replace entirely is checked here, call by call."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from typing import Any

import pytest

from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import system as system_module
from tunlab.devices._bsd.system import RawIfAddr, System, decode_ifaddr


class MacSocket:
    """socket.socket as CPython builds it around an fd on macOS: with no family given it asks
    getsockname, which a kernel-control socket answers with EOPNOTSUPP (Modules/socketmodule.c
    sock_initobj_impl raises it); macOS has no SO_PROTOCOL to ask either."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None) -> None:
        if fileno is not None and family == -1:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported on socket")


class FakeLibc:
    """The libc calls System makes, recorded; answers as macOS/NetBSD would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connect(self, fd: int, buf: Any, length: int) -> int:
        self.calls.append(("connect", bytes(buf)[:length]))
        return 0

    def getsockopt(self, fd: int, level: int, option: int, buf: Any, length: Any) -> int:
        self.calls.append(("getsockopt", (level, option)))
        name = b"utun7\0"
        ctypes.memmove(buf, name, len(name))
        length._obj.value = len(name)
        return 0

    def setsockopt(self, fd: int, level: int, option: int, value: Any, size: int) -> int:
        self.calls.append(("setsockopt", (level, option, value._obj.value, size)))
        return 0


class Probe(System):
    """System with libc and CTLIOCGINFO answered by doubles."""

    def __init__(self, abi: A.Abi) -> None:
        super().__init__(abi)
        self.fake = FakeLibc()

    @property
    def libc(self) -> Any:
        return self.fake

    def ioctl(self, fd: int, request: int, arg: bytearray | int) -> bytearray | int:
        assert request == A.CTLIOCGINFO and isinstance(arg, bytearray)
        assert arg[4:30].rstrip(b"\0") == A.UTUN_CONTROL_NAME.encode()
        struct.pack_into("I", arg, 0, 0x2A)  # the control's id
        return arg


@pytest.fixture(autouse=True)
def cpython_on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_module.socket, "socket", MacSocket)


@pytest.mark.parametrize("unit", [0, 8])
def test_a_utun_is_connected_through_libc_with_a_sockaddr_ctl(unit: int) -> None:
    """socket.socket(fileno=fd) fails on a kernel-control socket (CPython cannot learn its
    family): connect goes through libc with the sockaddr_ctl built here."""
    sys = Probe(A.DARWIN)
    sys.connect_control(5, A.UTUN_CONTROL_NAME, unit)
    (call,) = [c for c in sys.fake.calls if c[0] == "connect"]
    assert call[1] == struct.pack("BBHII5I", 32, A.AF_SYSTEM, 2, 0x2A, unit, 0, 0, 0, 0, 0)


def test_a_utun_name_is_read_through_libc() -> None:
    sys = Probe(A.DARWIN)
    assert sys.getsockopt(5, A.SYSPROTO_CONTROL, A.UTUN_OPT_IFNAME, 16) == b"utun7\0"


def test_a_socket_option_is_set_through_libc_with_the_os_numbers() -> None:
    sys = Probe(A.DARWIN)
    sys.setsockopt_int(5, A.SOL_SOCKET, A.SO_SNDBUF, 65617)
    assert ("setsockopt", (0xFFFF, 0x1001, 65617, 4)) in sys.fake.calls


def test_netbsd_names_a_device_with_devname50(monkeypatch: pytest.MonkeyPatch) -> None:
    """NetBSD's <stdlib.h> renames devname to __devname50 (64-bit dev_t); the plain symbol is
    the 32-bit compat one."""
    seen: list[str] = []

    class Libc:
        def __getattr__(self, name: str) -> Any:
            seen.append(name)

            def call(rdev: int, mode: int) -> bytes:
                return b"tun3"

            return call

    sys = System(A.NETBSD)
    monkeypatch.setattr(System, "libc", property(lambda self: Libc()))
    with open("/dev/null", "rb") as chardev:  # any character device: its st_rdev goes in
        assert sys.device_name(chardev.fileno()) == "tun3"
    assert seen == ["__devname50"]


@pytest.mark.parametrize(
    ("os_name", "embedded"), [("darwin", True), ("openbsd", True), ("netbsd", True), ("freebsd", False)]
)
def test_link_local_scopes_are_read_from_either_form(os_name: str, embedded: bool) -> None:
    abi = A.ABIS[os_name]
    addr = bytearray(socket.inet_pton(socket.AF_INET6, "fe80::1"))
    scope_id = 0
    if embedded:
        addr[2:4] = (4).to_bytes(2, "big")  # KAME: the scope inside the address
    else:
        scope_id = 4
    raw = struct.pack("BBHI16sI", 28, abi.af_inet6, 0, 0, bytes(addr), scope_id)
    entry = decode_ifaddr(abi, RawIfAddr("utun4", 0, raw))
    assert entry is not None and entry.address == "fe80::1%4"
