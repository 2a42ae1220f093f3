"""macOS: TUN through utun (a kernel-control socket), TAP through a feth pair.

utun: a PF_SYSTEM socket connected to com.apple.net.utun_control makes utunN (the kernel picks
N, or unit N+1 names it); each frame carries the 4-byte address family, kept out of the
caller's way. feth: two fake-Ethernet interfaces peered by SIOCSDRVSPEC — the visible one
carries the addresses, the other is read through BPF and written through an AF_NDRV socket,
so callers read and write whole Ethernet frames. No ifconfig or route processes: ioctls and
PF_ROUTE. Procedure and numbers: cross-os-abi.md §3 (xnu-11417.101.15).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import re
import socket
import struct
from collections import deque
from typing import ClassVar

from tunlab.devices._backend import Bytes, DeviceBackend, WritableBuffer, unsupported
from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import bpf, wire
from tunlab.devices._bsd.device import FAMILY_CAPABILITIES, AfHeaderFrames, BsdFamilyDevice
from tunlab.devices._bsd.ifconfig import Interface
from tunlab.devices._bsd.system import System
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig, LinkSettings
from tunlab.devices._layer import Layer
from tunlab.devices._readiness import PollTarget, Readiness, Ready
from tunlab.errors import (
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    UnsupportedOperationError,
)

ABI = A.DARWIN
NDRV_SNDBUF = 65535 + 14 + 4 + 64
_COMMON = FAMILY_CAPABILITIES
UTUN_CAPS = _COMMON | {Capability.FROM_FD, Capability.PACKET_INFORMATION}
FETH_CAPS = (_COMMON - {Capability.FD}) | {Capability.TAP, Capability.MAC}  # BPF + AF_NDRV: no one fd


class DarwinDevice(BsdFamilyDevice):
    """The macOS backend (platform 'darwin'): create() makes a Utun or a FethTap."""

    platform: ClassVar[str] = "darwin"
    abi: ClassVar[A.Abi] = ABI

    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        return FETH_CAPS if layer is Layer.L2 else UTUN_CAPS

    @classmethod
    def create(cls, config: DeviceConfig, sys: System | None = None) -> DeviceBackend:
        sys = sys or cls.system()
        dev: DarwinDevice = FethTap.make(sys, config) if config.layer is Layer.L2 else Utun.make(sys, config)
        try:
            dev.config.configure(config.link_settings())
        except BaseException:
            dev.close()  # utun goes with its socket; both feth sides are destroyed
            raise
        return dev

    @classmethod
    def from_fd(cls, fd: int, *, owned: bool, sys: System | None = None) -> DeviceBackend:
        """A utun fd opened elsewhere (a Network Extension's packetFlow socket, a parent)."""
        return Utun.wrap(sys or cls.system(), fd, owned=owned)

    def recv_into(self, buffer: WritableBuffer) -> int:  # pragma: no cover - subclasses
        raise NotImplementedError

    def send(self, data: Bytes) -> int:  # pragma: no cover - subclasses
        raise NotImplementedError

    def close(self, *, release: bool = False) -> int | None:  # pragma: no cover - subclasses
        raise NotImplementedError


# ---- utun ---------------------------------------------------------------------------------------
class Utun(DarwinDevice):
    """utunN: frames are IP packets (the address-family word stripped and added here)."""

    def __init__(self, sys: System, fd: int, name: str, *, owned: bool, keep_header: bool) -> None:
        super().__init__(sys, Layer.L3, name, fd=fd, owned=owned, point_to_point=True, capabilities=UTUN_CAPS)
        self._frames = AfHeaderFrames(sys, ABI, keep_header)
        self.frame_format = self._frames.frame_format

    @classmethod
    def make(cls, sys: System, config: DeviceConfig) -> Utun:
        unit = 0
        if config.name is not None:
            m = re.fullmatch(r"utun(\d+)", config.name)
            if m is None:
                raise ValueError(
                    f"name: {config.name!r}: on macOS a TUN device is named utunN "
                    "(or leave the name to the kernel)"
                )
            unit = int(m.group(1)) + 1
        try:
            fd = sys.socket(A.AF_SYSTEM, socket.SOCK_DGRAM, A.SYSPROTO_CONTROL)
        except PermissionError:
            raise DevicePermissionError("opening a kernel-control socket was refused: run as root") from None
        try:
            sys.connect_control(fd, A.UTUN_CONTROL_NAME, unit)
            name = _utun_name(sys, fd)
        except OSError as exc:
            sys.close(fd)
            if exc.errno == errno.EBUSY:
                raise InterfaceExistsError(
                    f"{config.name} already exists: pick another utunN or leave the name out"
                ) from None
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise DevicePermissionError("creating a utun device needs root: run as root (sudo)") from None
            raise DeviceError(f"creating a utun device failed: {exc.strerror or exc}") from None
        return cls(sys, fd, name, owned=True, keep_header=config.packet_information)

    @classmethod
    def wrap(cls, sys: System, fd: int, *, owned: bool) -> Utun:
        if fd < 0:
            raise ValueError(f"fd: {fd} is not a file descriptor")
        try:
            name = _utun_name(sys, fd)
        except OSError as exc:
            raise DeviceError(f"fd {fd} is not a utun socket (UTUN_OPT_IFNAME: {exc.strerror})") from None
        return cls(sys, fd, name, owned=owned, keep_header=False)

    def recv_into(self, buffer: WritableBuffer) -> int:
        return self._frames.recv_into(self._check(), buffer)

    def send(self, data: Bytes) -> int:
        return self._frames.send(self._check(), data)

    def close(self, *, release: bool = False) -> int | None:
        if release:
            fd = self._check()
            self._fd = -1
            return fd
        fd, self._fd = self._fd, -1
        if fd < 0:
            return None
        self.iface.delete_routes()
        if self._owned:
            self.sys.close(fd)  # the interface goes with its control socket
        return None


def _utun_name(sys: System, fd: int) -> str:
    raw = sys.getsockopt(fd, A.SYSPROTO_CONTROL, A.UTUN_OPT_IFNAME, 16)
    return raw.split(b"\0", 1)[0].decode()


# ---- feth TAP -----------------------------------------------------------------------------------
class FethTap(DarwinDevice):
    """A feth pair: `name` is the visible side (addresses, MAC); the peer is read by BPF and
    written by AF_NDRV. Both are destroyed on close."""

    def __init__(self, sys: System, name: str, peer: str, ndrv: int, bpf: int, blen: int) -> None:
        super().__init__(
            sys, Layer.L2, name, fd=bpf, owned=True, point_to_point=False, capabilities=FETH_CAPS
        )
        self.peer = peer
        self._ndrv = ndrv
        self._buf = bytearray(blen)
        self._pending: deque[bytes] = deque()

    @classmethod
    def make(cls, sys: System, config: DeviceConfig) -> FethTap:
        wanted = config.name or A.FETH_CLONE
        if config.name is not None and not re.fullmatch(r"feth\d+", config.name):
            raise ValueError(f"name: {config.name!r}: on macOS a TAP device is a fake Ethernet, named fethN")
        try:
            ndrv = sys.socket(A.AF_NDRV, socket.SOCK_RAW, 0)
        except PermissionError:
            raise DevicePermissionError("an AF_NDRV socket needs root: run as root (sudo)") from None
        made: list[str] = []
        bpf = -1
        try:
            name = _ifcreate(sys, ndrv, wanted, config.name)
            made.append(name)
            peer = _ifcreate(sys, ndrv, A.FETH_CLONE, None)
            made.append(peer)
            _peer(sys, ndrv, peer, name)
            for side in made:
                _flags_up(sys, ndrv, side)
            addr = struct.pack("BB16s", A.SOCKADDR_NDRV_SIZE, A.AF_NDRV, peer.encode())
            sys.bind_raw(ndrv, addr)
            sys.connect_raw(ndrv, addr)
            # the 8 KiB default send buffer refuses any frame above it (EMSGSIZE): room for
            # the largest Ethernet frame (a 64 KiB MTU, its header and a VLAN tag)
            sys.setsockopt_int(ndrv, A.SOL_SOCKET, A.SO_SNDBUF, NDRV_SNDBUF)
            bpf, blen = _open_bpf(sys, peer)
        except BaseException:
            if bpf >= 0:
                sys.close(bpf)
            for side in reversed(made):
                with contextlib.suppress(OSError):
                    sys.ioctl(ndrv, ABI.SIOCIFDESTROY, wire.ifreq(ABI, side))
            sys.close(ndrv)
            raise
        return cls(sys, name, peer, ndrv, bpf, blen)

    # ---- frames -------------------------------------------------------------------------------
    def recv_into(self, buffer: WritableBuffer) -> int:
        fd = self._check()
        while not self._pending:
            n = self.sys.read_into(fd, self._buf)  # BPF: exactly the buffer size it was given
            self._pending.extend(wire.bpf_records(ABI, self._buf, n))
        frame = self._pending.popleft()
        n = min(len(frame), len(buffer))
        buffer[:n] = frame[:n]
        return n

    def send(self, data: Bytes) -> int:
        self._check()
        try:
            return self.sys.write(self._ndrv, data)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise DeviceError(
                    f"a {len(data)}-byte frame is more than the AF_NDRV socket takes on {self._name} "
                    f"({NDRV_SNDBUF} bytes): send frames of at most MTU + 18 bytes",
                    errno.EMSGSIZE,
                ) from None
            raise

    def readiness(self) -> Readiness:
        fd = self._check()
        return _BufferedReadiness(PollTarget(fd), PollTarget(self._ndrv, writable=True), self._pending)

    def _set_blocking_mode(self, nonblocking: bool) -> None:
        super()._set_blocking_mode(nonblocking)
        self.sys.set_blocking(self._ndrv, not nonblocking)

    def configured(self, settings: LinkSettings) -> None:
        if settings.mtu is not None:  # the peer carries the same frames
            Interface(self.sys, ABI, self.peer, False).set_mtu(settings.mtu)

    def close(self, *, release: bool = False) -> int | None:
        if release:
            raise UnsupportedOperationError(
                "a feth TAP has two descriptors (BPF and AF_NDRV): into_fd is not supported"
            )
        fd, self._fd = self._fd, -1
        if fd < 0:
            return None
        self.sys.close(fd)
        try:
            for side in (self._name, self.peer):
                with contextlib.suppress(OSError):
                    self.sys.ioctl(self._ndrv, ABI.SIOCIFDESTROY, wire.ifreq(ABI, side))
        finally:
            self.sys.close(self._ndrv)
            self._ndrv = -1
        return None

    def fileno(self) -> int:
        unsupported(self, "fileno (a feth TAP reads through BPF and writes through AF_NDRV)", Capability.FD)


class _BufferedReadiness(Readiness):
    """Readable when BPF has data — or when frames of an earlier BPF read are still queued."""

    def __init__(self, read: PollTarget, write: PollTarget, pending: deque[bytes]) -> None:
        super().__init__(read, write)
        self._pending = pending

    def wait(self, *, write: bool = False, timeout: float | None = None, interrupt: object = None) -> Ready:
        if not write and self._pending:
            return Ready.READY
        return super().wait(write=write, timeout=timeout, interrupt=interrupt)  # type: ignore[arg-type]


def _ifcreate(sys: System, fd: int, wanted: str, explicit: str | None) -> str:
    try:
        out = sys.ioctl(fd, ABI.SIOCIFCREATE, wire.ifreq(ABI, wanted))
    except OSError as exc:
        if exc.errno == errno.EEXIST and explicit:
            raise InterfaceExistsError(
                f"{explicit} already exists: pick another fethN or leave the name out"
            ) from None
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise DevicePermissionError("creating a feth interface needs root: run as root (sudo)") from None
        raise DeviceError(f"SIOCIFCREATE {wanted} failed: {exc.strerror or exc}") from None
    assert isinstance(out, bytearray)
    return wire.read_name(out)


def fake_request(peer: str) -> bytearray:
    """if_fake_request for IF_FAKE_S_CMD_SET_PEER: reserved words zero, the peer's name at 32."""
    req = bytearray(A.IF_FAKE_REQUEST_SIZE)
    req[A.IF_FAKE_PEER_AT : A.IF_FAKE_PEER_AT + 16] = wire.ifname(peer)
    return req


def ifdrv(name: str, cmd: int, data_address: int, length: int) -> bytearray:
    """struct ifdrv (#pragma pack(4), 40 bytes): name, cmd (u_long), len (size_t), data (void*)."""
    out = bytearray(A.IFDRV_SIZE)
    out[:16] = wire.ifname(name)
    struct.pack_into("QQQ", out, 16, cmd, length, data_address)
    return out


def _peer(sys: System, fd: int, name: str, peer: str) -> None:
    req = fake_request(peer)
    holder = (ctypes.c_char * len(req)).from_buffer(req)  # kept alive across the ioctl
    arg = ifdrv(name, A.IF_FAKE_S_CMD_SET_PEER, ctypes.addressof(holder), len(req))
    try:
        sys.ioctl(fd, A.SIOCSDRVSPEC, arg)
    except OSError as exc:
        raise DeviceError(
            f"peering {name} with {peer} (SIOCSDRVSPEC) failed: {exc.strerror or exc}"
        ) from None
    finally:
        del holder


def _flags_up(sys: System, fd: int, name: str) -> None:
    """IFF_UP by get-modify-set (a new feth already has IFF_MULTICAST, 0x8000, and more)."""
    out = sys.ioctl(fd, ABI.SIOCGIFFLAGS, wire.ifreq_short(ABI, name))
    assert isinstance(out, bytearray)
    wire.set_short(out, wire.read_short(out) | A.IFF_UP)
    sys.ioctl(fd, ABI.SIOCSIFFLAGS, out)


def _open_bpf(sys: System, interface: str) -> tuple[int, int]:
    """The feth peer's BPF: complete headers on write, promiscuous, no sent packets."""
    return bpf.attach(sys, interface, direction="in", complete_headers=True, promiscuous=True)
