"""A syscall-level test double for the macOS/BSD backends: every call recorded with its bytes,
answered as the kernel would (names written back, flags kept, BPF records served), and a
failure injectable at any call — so create → configure → I/O → close, and each rollback, are
checked on Linux against the byte layouts the real headers define (tests/abi/)."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import select
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tunlab.devices._bsd import wire
from tunlab.devices._bsd.abi import (
    AF_INET,
    AF_LINK,
    BIOCGDLT,
    IFF_BROADCAST,
    IFF_MULTICAST,
    IFF_POINTOPOINT,
    IFF_UP,
    IN6_IFF_TENTATIVE,
    SIOCSDRVSPEC,
    SO_SNDBUF,
    SOL_SOCKET,
    TUN_ABIS,
    Abi,
)
from tunlab.devices._bsd.system import IfAddr, RawIfAddr, System

IFF_SIMPLEX = 0x800


def born(os_name: str, name: str) -> dict[str, Any]:
    """An interface as its kernel makes it: flags, MTU, and on macOS whether it starts up.

    - FreeBSD sys/net/if_tuntap.c tuncreate(): IFF_MULTICAST, plus IFF_POINTOPOINT (tun) or
      IFF_BROADCAST | IFF_SIMPLEX (tap); TUNMTU / ether_ifattach: 1500.
    - OpenBSD sys/net/if_tun.c tun_create(): IFF_POINTOPOINT | IFF_MULTICAST (tun),
      IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST (tap); 1500.
    - NetBSD sys/net/if_tun.c tun_clone_create(): IFF_POINTOPOINT | IFF_MULTICAST; if_tap.c
      tap_attach(): IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST; 1500.
    - xnu bsd/net/if_utun.c utun_attach_utun(): IFF_UP | IFF_MULTICAST | IFF_POINTOPOINT (a
      utun is up from birth); if_fake.c feth_clone_create(): IFF_BROADCAST | IFF_MULTICAST |
      IFF_SIMPLEX; 1500.
    Every one has IFF_MULTICAST (0x8000): the high bit of the 16-bit ifr_flags."""
    if name.startswith(("tap", "feth")):
        flags = IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST
    else:
        flags = IFF_POINTOPOINT | IFF_MULTICAST
    if os_name == "darwin" and name.startswith("utun"):
        flags |= IFF_UP
    return {"flags": flags, "flagshigh": 0, "mtu": 1500}


# the KAME-derived stacks hand out link-local addresses with the scope (the interface index)
# embedded in bytes 2-3 of the address, sin6_scope_id 0 (xnu netinet6/scope6.c, OpenBSD and
# NetBSD in6_ifattach; FreeBSD clears it before getifaddrs: sa6_recoverscope)
KAME_EMBEDS_SCOPE = ("darwin", "openbsd", "netbsd")


@dataclass
class Call:
    name: str
    fd: int | None
    args: tuple[Any, ...]
    data: bytes = b""


@dataclass
class FakeKernel:
    """What the double answers with."""

    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_unit: dict[str, int] = field(default_factory=dict)
    busy_units: set[int] = field(default_factory=set)
    busy_bpf: set[int] = field(default_factory=lambda: {0})
    root: bool = True
    reads: dict[int, deque[bytes]] = field(default_factory=dict)
    blen: int = 4096
    ifaddrs: list[IfAddr] = field(default_factory=list)
    # BSD tun/tap character devices
    missing_nodes: set[str] = field(default_factory=set)  # /dev paths that do not exist
    open_units: set[str] = field(default_factory=set)  # units another process has open
    nd6_flags: int = 0x21  # ND6_IFF_PERFORMNUD | ND6_IFF_AUTO_LINKLOCAL, as a new interface has
    nd6_tail: bytes = bytes(range(1, 33))  # the rest of nd_ifinfo: must come back unchanged
    tentative_reads: int = 0  # SIOCGIFAFLAG_IN6 answers 'tentative' this many times
    needs_interface: tuple[str, ...] = ()  # node prefixes that open only an existing interface
    no_bpf_clone: bool = False  # there is no cloning /dev/bpf (only /dev/bpfN)
    dlt: int = 0  # what BIOCGDLT answers


class RecordingSystem(System):
    """Replaces every OS call; `fail_at(predicate, errno)` makes a matching call fail once."""

    def __init__(self, abi: Abi, kernel: FakeKernel | None = None) -> None:
        super().__init__(abi)
        self.kernel = kernel or FakeKernel()
        self.calls: list[Call] = []
        self.open_fds: dict[int, str] = {}
        self._peers: dict[int, socket.socket] = {}
        self._failures: list[tuple[Any, int]] = []
        self.blocking: dict[int, bool] = {}
        self.drvspec: list[bytes] = []  # what each SIOCSDRVSPEC pointed to, read during the call
        self.tun = TUN_ABIS.get(abi.os)
        self.units: dict[int, str] = {}  # fd -> the tun/tap unit it has open
        self.int_settings: dict[tuple[int, int], int] = {}  # (fd, request) -> the int it was given
        self.nd6_set: list[bytes] = []
        self.sndbuf: dict[int, int] = {}  # fd -> SO_SNDBUF it was given

    # ---- helpers for tests -----------------------------------------------------------------
    def fail_at(self, predicate: Any, code: int = errno.EIO) -> None:
        self._failures.append((predicate, code))

    def _maybe_fail(self, call: Call) -> None:
        for i, (pred, code) in enumerate(self._failures):
            if pred(call):
                del self._failures[i]
                raise OSError(code, f"injected {errno.errorcode.get(code, code)}")

    def _record(self, name: str, fd: int | None, *args: Any, data: bytes = b"") -> Call:
        call = Call(name, fd, args, data)
        self.calls.append(call)
        self._maybe_fail(call)
        return call

    def _new_fd(self, what: str) -> int:
        """A real descriptor (one end of a socketpair: writable, never readable), so readiness
        polls it as it would the device's."""
        mine, peer = socket.socketpair()
        fd = mine.detach()
        self._peers[fd] = peer
        self.open_fds[fd] = what
        return fd

    def ioctls(self, request: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.name == "ioctl" and (request is None or c.args[0] == request)]

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    # ---- the System interface ----------------------------------------------------------------
    def socket(self, family: int, kind: int, proto: int = 0) -> int:
        call = self._record("socket", None, family, kind, proto)
        if not self.kernel.root and family in (27, 32):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        call.fd = self._new_fd(f"socket({family},{kind},{proto})")
        return call.fd

    def route_messages(self) -> list[bytes]:
        """What was written to PF_ROUTE sockets."""
        fds = {c.fd for c in self.calls if c.name == "socket" and c.args[0] == self.abi.af_route}
        return [c.data for c in self.calls if c.name == "write" and c.fd in fds]

    def open(self, path: str, flags: int) -> int:
        call = self._record("open", None, path, flags)
        k = self.kernel
        if path.startswith("/dev/bpf"):
            n = int(path.removeprefix("/dev/bpf") or -1)  # /dev/bpf: the cloning node
            if n in k.busy_bpf or (n == -1 and k.no_bpf_clone):
                raise OSError(errno.ENOENT if n == -1 else errno.EBUSY, "busy or missing")
            k.busy_bpf.add(n)  # an open bpfN is busy for everyone else until closed
        unit = None
        if path.startswith(("/dev/tun", "/dev/tap")):
            if path in k.missing_nodes:
                raise OSError(errno.ENOENT, "No such file or directory")
            unit = path.removeprefix("/dev/")
            if unit in ("tun", "tap"):  # a cloning node: a fresh unit
                n = k.next_unit.get(unit, 0)
                while f"{unit}{n}" in k.interfaces:
                    n += 1
                k.next_unit[unit] = n + 1
                unit = f"{unit}{n}"
            elif unit in k.open_units:
                raise OSError(errno.EBUSY, "Device busy")
            elif unit not in k.interfaces and unit.startswith(k.needs_interface):
                raise OSError(errno.ENXIO, "Device not configured")
            k.interfaces.setdefault(unit, born(self.abi.os, unit))
            k.open_units.add(unit)
        call.fd = self._new_fd(path)
        if unit is not None:
            self.units[call.fd] = unit
        return call.fd

    def close(self, fd: int) -> None:
        self._record("close", fd)
        if fd not in self.open_fds:
            raise OSError(errno.EBADF, f"fd {fd} is not open (closed twice?)")
        path = self.open_fds.pop(fd)
        if path.startswith("/dev/bpf") and path[8:].isdigit():
            self.kernel.busy_bpf.discard(int(path[8:]))
        os.close(fd)
        self._peers.pop(fd).close()
        unit = self.units.pop(fd, None)
        if unit is not None:
            self.kernel.open_units.discard(unit)

    def ioctl(self, fd: int, request: int, arg: bytearray | int) -> bytearray | int:
        data = bytes(arg) if isinstance(arg, (bytes, bytearray)) else b""
        call = self._record("ioctl", fd, request, data=data)
        if fd not in self.open_fds:
            raise OSError(errno.EBADF, "bad fd")
        if isinstance(arg, int):
            return 0
        return self._answer(call, arg)

    def _answer(self, call: Call, arg: bytearray) -> bytearray:
        abi = self.abi
        req = call.args[0]
        name = wire.read_name(arg) if len(arg) >= 16 else ""
        k = self.kernel
        if req == abi.SIOCIFCREATE:
            clone = name.rstrip("0123456789")
            if name != clone:  # an explicit unit
                if name in k.interfaces:
                    raise OSError(errno.EEXIST, "exists")
                made = name
            else:
                unit = k.next_unit.get(clone, 0)
                k.next_unit[clone] = unit + 1
                made = f"{clone}{unit}"
            k.interfaces[made] = born(self.abi.os, made)
            arg[:16] = wire.ifname(made)
        elif req == abi.SIOCIFDESTROY:
            if name not in k.interfaces:
                raise OSError(errno.ENXIO, "no such interface")
            del k.interfaces[name]
        elif req == abi.SIOCGIFFLAGS:
            state = self._state(name)
            struct.pack_into("H", arg, 16, state["flags"])
            if abi.os == "freebsd":  # ifr_flagshigh: the flags above 16 bits (net/if.h)
                struct.pack_into("H", arg, 18, state.get("flagshigh", 0))
        elif req == abi.SIOCSIFFLAGS:
            state = self._state(name)
            was_up = state["flags"] & IFF_UP
            state["flags"] = struct.unpack_from("H", arg, 16)[0]
            if abi.os == "freebsd":  # ifhwioctl: new_flags = ifr_flags | ifr_flagshigh << 16
                state["flagshigh"] = struct.unpack_from("H", arg, 18)[0]
            if state["flags"] & IFF_UP and not was_up:
                self._link_local(name, state)
        elif req == abi.SIOCGIFMTU:
            struct.pack_into("i", arg, 16, self._state(name).get("mtu", 1500))
        elif req == abi.SIOCSIFMTU:
            self._state(name)["mtu"] = wire.read_int(arg)
        elif req == abi.SIOCAIFADDR:
            addr = str(ipaddress.IPv4Address(bytes(arg[20:24])))
            mask, dst = str(ipaddress.IPv4Address(bytes(arg[52:56]))), bytes(arg[36:40])
            entry = IfAddr(
                name, 0, AF_INET, addr, mask, str(ipaddress.IPv4Address(dst)) if any(dst) else None
            )
            self._addrs(name)[:] = [e for e in self._addrs(name) if e.address != addr] + [entry]
        elif req == abi.SIOCAIFADDR_IN6:
            addr = str(ipaddress.IPv6Address(bytes(arg[24:40])))
            mask = str(ipaddress.IPv6Address(bytes(arg[80:96])))
            self._addrs(name).append(IfAddr(name, 0, abi.af_inet6, addr, mask))
        elif req in (abi.SIOCDIFADDR, abi.SIOCDIFADDR_IN6):
            raw = bytes(arg[20:24]) if req == abi.SIOCDIFADDR else bytes(arg[24:40])
            gone = str(ipaddress.ip_address(raw))
            before = len(self._addrs(name))
            self._addrs(name)[:] = [e for e in self._addrs(name) if e.address != gone]
            if len(self._addrs(name)) == before:
                raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
        elif req == abi.SIOCSIFLLADDR:
            self._state(name)["mac"] = bytes(arg[18:24])
        elif req == SIOCSDRVSPEC:
            address = struct.unpack_from("Q", arg, 32)[0]
            length = struct.unpack_from("Q", arg, 24)[0]
            self.drvspec.append(ctypes.string_at(address, length))
        elif self.tun is not None and self._answer_tun(call, req, arg):
            pass
        elif req == BIOCGDLT:
            struct.pack_into("I", arg, 0, k.dlt)
        elif req == abi.BIOCGBLEN:
            struct.pack_into("I", arg, 0, k.blen)
        elif req == abi.BIOCSBLEN:
            k.blen = int(struct.unpack("I", arg)[0])
        return arg

    def _answer_tun(self, call: Call, req: int, arg: bytearray) -> bool:
        t = self.tun
        assert t is not None
        k = self.kernel
        fd = call.fd
        assert fd is not None
        if req in (t.tunsifhead, t.tunsifmode):
            self.int_settings[(fd, req)] = struct.unpack("i", arg[:4])[0]
        elif req == t.tungifhead:
            head = self.int_settings.get((fd, t.tunsifhead or 0), 0)
            struct.pack_into("i", arg, 0, head)
        elif req == t.gifname:
            unit = self.units.get(fd)
            if unit is None or (not t.gifname_tun and unit.startswith("tun")):
                raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
            arg[:16] = wire.ifname(unit)
        elif req == t.SIOCGIFINFO_IN6:
            struct.pack_into("I", arg, t.in6_ndireq_flags_at, k.nd6_flags)
            arg[16 : t.in6_ndireq_flags_at] = k.nd6_tail[: t.in6_ndireq_flags_at - 16]
        elif req == t.SIOCSIFINFO_IN6:
            self.nd6_set.append(bytes(arg))
            k.nd6_flags = struct.unpack_from("I", arg, t.in6_ndireq_flags_at)[0]
        elif req == t.SIOCSIFNAME:
            new = ctypes.string_at(struct.unpack_from("Q", arg, 16)[0], 16).split(b"\0")[0].decode()
            name = wire.read_name(arg)
            if new in k.interfaces:
                raise OSError(errno.EEXIST, "File exists")
            k.interfaces[new] = k.interfaces.pop(name)
        elif req == t.SIOCALIFADDR:
            self._state(wire.read_name(arg))["mac"] = bytes(arg[24 + 8 : 24 + 14])
        elif req == t.SIOCGIFAFLAG_IN6:
            tentative = k.tentative_reads > 0
            k.tentative_reads -= 1
            struct.pack_into("i", arg, 16, IN6_IFF_TENTATIVE if tentative else 0)
        else:
            return False
        return True

    def _state(self, name: str) -> dict[str, Any]:
        """The interface's record; one the double never saw made is born as its OS makes it."""
        state = self.kernel.interfaces.setdefault(name, {})
        for key, value in born(self.abi.os, name).items():
            state.setdefault(key, value)
        return state

    def _addrs(self, name: str) -> list[IfAddr]:
        return self._state(name).setdefault("addrs", [])

    def if_exists(self, name: str) -> bool:
        return name in self.kernel.interfaces

    def device_name(self, fd: int) -> str:
        path = self.open_fds.get(fd)
        if path is None or not path.startswith("/dev/"):
            raise OSError(errno.EBADF, "not a device")
        return self.units.get(fd, path.removeprefix("/dev/"))

    def deliver(self, fd: int, data: bytes) -> None:
        """Queue what the next read of fd returns, and make fd poll readable until it is read."""
        self.kernel.reads.setdefault(fd, deque()).append(data)
        self._peers[fd].send(b"r")

    def read_into(self, fd: int, buf: bytearray | memoryview) -> int:
        self._record("read", fd, len(buf))
        queue = self.kernel.reads.get(fd)
        if not queue:
            raise BlockingIOError(errno.EAGAIN, "would block")
        data = queue.popleft()
        if select.select([fd], [], [], 0)[0]:
            os.read(fd, 1)  # the readiness byte deliver() sent
        buf[: len(data)] = data
        return len(data)

    def readv(self, fd: int, bufs: list[bytearray | memoryview]) -> int:
        self._record("readv", fd, tuple(len(b) for b in bufs))
        queue = self.kernel.reads.get(fd)
        if not queue:
            raise BlockingIOError(errno.EAGAIN, "would block")
        data = queue.popleft()
        pos = 0
        for b in bufs:
            take = min(len(b), len(data) - pos)
            b[:take] = data[pos : pos + take]
            pos += take
        return pos

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        self._record("write", fd, data=bytes(data))
        what = self.open_fds.get(fd, "")
        if what.startswith("socket(27,") and len(data) > self.sndbuf.get(fd, 8192):
            # AF_NDRV: 8 KiB send buffer (xnu bsd/net/ndrv.c NDRVSNDQ), atomic records larger
            # than it fail (uipc_socket.c sosendcheck)
            raise OSError(errno.EMSGSIZE, "Message too long")
        return len(data)

    def writev(self, fd: int, parts: list[bytes | bytearray | memoryview]) -> int:
        joined = b"".join(bytes(p) for p in parts)
        self._record("writev", fd, data=joined)
        return len(joined)

    def set_blocking(self, fd: int, blocking: bool) -> None:
        self._record("set_blocking", fd, blocking)
        self.blocking[fd] = blocking

    def get_blocking(self, fd: int) -> bool:
        return self.blocking.get(fd, True)

    def pid(self) -> int:
        return 4242

    def bind_raw(self, fd: int, addr: bytes) -> None:
        self._record("bind", fd, data=addr)

    def connect_raw(self, fd: int, addr: bytes) -> None:
        self._record("connect", fd, data=addr)

    def connect_control(self, fd: int, name: str, unit: int) -> None:
        self._record("connect_control", fd, name, unit)
        if not self.kernel.root:
            raise OSError(errno.EPERM, "Operation not permitted")
        if unit in self.kernel.busy_units:
            raise OSError(errno.EBUSY, "Resource busy")
        self.open_fds[fd] = f"utun{unit - 1 if unit else 7}"

    def getsockopt(self, fd: int, level: int, option: int, size: int) -> bytes:
        self._record("getsockopt", fd, level, option, size)
        what = self.open_fds.get(fd, "")
        if not what.startswith("utun"):
            raise OSError(errno.ENOPROTOOPT, "not a utun socket")
        return what.encode().ljust(size, b"\0")

    def if_nametoindex(self, name: str) -> int:
        return 7

    def raw_ifaddrs(self) -> list[RawIfAddr]:
        """What the test put there, then each interface's MAC and addresses, as the OS's
        getifaddrs hands them out: sockaddrs (the real System decodes them)."""
        self._record("getifaddrs", None)
        entries = list(self.kernel.ifaddrs)
        for name, state in self.kernel.interfaces.items():
            mac = state.get("mac", bytes.fromhex("02005e0053ff") if name.startswith(("tap", "feth")) else b"")
            if mac:
                entries.append(IfAddr(name, 0, AF_LINK, ":".join(f"{b:02x}" for b in mac), index=7))
            entries.extend(state.get("addrs", []))
        return [self._raw(e) for e in entries]

    def _raw(self, e: IfAddr) -> RawIfAddr:
        abi = self.abi
        if e.family == AF_LINK:
            mac = bytes.fromhex((e.address or "").replace(":", ""))
            return RawIfAddr(e.name, e.flags, wire.sockaddr_dl(abi, e.index, mac))
        if e.family == AF_INET:

            def v4(text: str | None) -> bytes:
                return wire.sockaddr_in(ipaddress.IPv4Address(text)) if text else b""

            return RawIfAddr(e.name, e.flags, v4(e.address), v4(e.netmask), v4(e.destination))

        def v6(text: str | None) -> bytes:
            if not text:
                return b""
            addr, _, scope = text.partition("%")
            packed = bytearray(ipaddress.IPv6Address(addr).packed)
            if scope and abi.os in KAME_EMBEDS_SCOPE:
                packed[2:4] = int(scope).to_bytes(2, "big")  # embedded, sin6_scope_id left 0
                return wire.sockaddr_in6(abi, ipaddress.IPv6Address(bytes(packed)))
            return wire.sockaddr_in6(abi, ipaddress.IPv6Address(addr), int(scope or 0))

        return RawIfAddr(e.name, e.flags, v6(e.address), v6(e.netmask), v6(e.destination))

    def _link_local(self, name: str, state: dict[str, Any]) -> None:
        """Coming up, an interface gets its IPv6 link-local address (fe80::/64, index 7)."""
        addrs = state.setdefault("addrs", [])
        if not any((a.address or "").startswith("fe80:") for a in addrs):
            addrs.append(IfAddr(name, 0, self.abi.af_inet6, "fe80::5efe:7%7", "ffff:ffff:ffff:ffff::"))

    def setsockopt_int(self, fd: int, level: int, option: int, value: int) -> None:
        self._record("setsockopt", fd, level, option, value)
        if (level, option) == (SOL_SOCKET, SO_SNDBUF):
            self.sndbuf[fd] = value
