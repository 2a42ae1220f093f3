"""FreeBSD, OpenBSD and NetBSD tun/tap: a character device whose fd carries the frames.

Opening /dev/tunN (or a cloning node) makes the interface; tun frames carry the 4-byte
address family (TUNSIFHEAD where the OS needs asking), kept out of the caller's buffers; tap
frames are whole Ethernet frames. Interfaces tunlab made are destroyed on close (SIOCIFDESTROY),
never those it only opened or borrowed. The per-OS differences are hooks the OS modules fill
in (tunlab/devices/_bsd/{freebsd,openbsd,netbsd}.py). Numbers: cross-os-abi.md §4-6.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import struct
import time
from collections.abc import Sequence
from typing import ClassVar

from tunlab.devices._backend import Bytes, DeviceBackend, FrameFormat, WritableBuffer
from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.devices._bsd.device import FAMILY_CAPABILITIES, AfHeaderFrames, BsdFamilyDevice
from tunlab.devices._bsd.system import System
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig, LinkSettings
from tunlab.devices._layer import Layer
from tunlab.errors import (
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    TunUnavailableError,
)

UNITS = 256  # /dev/tun0../dev/tun255, as the MAKEDEV-made nodes go
DAD_WAIT = 3.0  # seconds an OS without a no-DAD flag may keep an address tentative

_COMMON = FAMILY_CAPABILITIES | {Capability.FROM_FD, Capability.VECTORED}
TUN_CAPS = _COMMON | {Capability.PACKET_INFORMATION}
TAP_CAPS = _COMMON | {Capability.TAP, Capability.MAC}


class RawFrames:
    """Frames as the fd gives them: tap's Ethernet frames, or tun with the AF header off."""

    frame_format = FrameFormat()
    keep = False

    def __init__(self, sys: System) -> None:
        self.sys = sys

    def recv_into(self, fd: int, buffer: WritableBuffer) -> int:
        return self.sys.read_into(fd, buffer)

    def send(self, fd: int, data: Bytes) -> int:
        return self.sys.write(fd, data)

    def recv_vectored(self, fd: int, buffers: Sequence[WritableBuffer]) -> int:
        return self.sys.readv(fd, list(buffers))

    def send_vectored(self, fd: int, buffers: Sequence[Bytes]) -> int:
        return self.sys.writev(fd, list(buffers))


class CharDevice(BsdFamilyDevice):
    """A BSD tun or tap unit (subclasses: one per OS, with that OS's numbers and quirks)."""

    tun: ClassVar[A.TunAbi]

    def __init__(
        self,
        sys: System,
        layer: Layer,
        fd: int,
        name: str,
        *,
        owned: bool,
        created: bool,
        af_header: bool,
        keep_header: bool = False,
    ) -> None:
        caps = TAP_CAPS if layer is Layer.L2 else TUN_CAPS
        if self.can_rename():
            caps = caps | {Capability.SET_NAME}
        super().__init__(
            sys, layer, name, fd=fd, owned=owned, point_to_point=layer is Layer.L3, capabilities=caps
        )
        self.created = created  # made by this open (or SIOCIFCREATE): destroyed on close
        self._frames: AfHeaderFrames | RawFrames = (
            AfHeaderFrames(sys, self.abi, keep_header) if af_header and layer is Layer.L3 else RawFrames(sys)
        )
        self.frame_format = self._frames.frame_format

    # ---- per-OS hooks -----------------------------------------------------------------------
    @classmethod
    def can_rename(cls) -> bool:
        return False

    def prepare(self) -> None:
        """Right after opening: the AF header on, point-to-point mode, DAD off (per OS)."""
        if self.layer is Layer.L3:
            if self.tun.tunsifhead is not None:
                self._set_int(self.tun.tunsifhead, 1, "TUNSIFHEAD (the address-family header)")
            self._set_int(self.tun.tunsifmode, A.TUN_PTP_MODE, "TUNSIFMODE (point-to-point)")

    def wait_dad(self, address: ipaddress.IPv6Address) -> None:
        """Where addresses are added without DAD, nothing to wait for."""

    # ---- creation -----------------------------------------------------------------------------
    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        caps = TAP_CAPS if layer is Layer.L2 else TUN_CAPS
        return caps | {Capability.SET_NAME} if cls.can_rename() else caps

    @classmethod
    def create(cls, config: DeviceConfig, sys: System | None = None) -> DeviceBackend:
        sys = sys or cls.system()
        prefix = "tap" if config.layer is Layer.L2 else "tun"
        if config.name is not None and not re.fullmatch(rf"{prefix}\d+", config.name):
            hint = " (rename it after creation with set_name)" if cls.can_rename() else ""
            raise ValueError(
                f"name: {config.name!r}: on {cls.platform} a {config.layer.kind.upper()} device is "
                f"named {prefix}N{hint}"
            )
        fd, name, created = cls.open_unit(sys, prefix, config.name)
        dev = cls(sys, config.layer, fd, name, owned=True, created=created, af_header=True,
                  keep_header=config.packet_information)  # fmt: skip
        try:
            dev.prepare()
            dev.config.configure(config.link_settings())
        except BaseException:
            dev.close()  # an interface this open made goes with it
            raise
        return dev

    @classmethod
    def open_unit(cls, sys: System, prefix: str, name: str | None) -> tuple[int, str, bool]:
        """(fd, interface name, created by us): a named unit, a cloned one, or the first free."""
        if name is not None:
            existed = sys.if_exists(name)
            fd = cls._open(sys, f"/dev/{name}", name)
            if fd is None:
                cls._ifcreate(sys, name)
                existed = False
                fd = cls._open(sys, f"/dev/{name}", name)
                if fd is None:
                    raise TunUnavailableError(
                        f"/dev/{name} does not exist: create the node (cd /dev && sh MAKEDEV {name})"
                    )
            return fd, name, not existed
        clone = cls.tun.tap_clone if prefix == "tap" else cls.tun.tun_clone
        if clone is not None:
            fd = cls._open(sys, clone, prefix)
            if fd is not None:
                try:
                    return fd, cls._gifname(sys, fd), True
                except BaseException:
                    sys.close(fd)
                    raise
        for unit in range(UNITS):  # the first unit no interface has: opening it makes ours
            candidate = f"{prefix}{unit}"
            if sys.if_exists(candidate):
                continue
            try:
                fd = cls._open(sys, f"/dev/{candidate}", candidate)
            except InterfaceExistsError:
                continue
            if fd is None:
                break
            return fd, candidate, True
        raise TunUnavailableError(
            f"no free {prefix} device under /dev ({prefix}0..{prefix}{UNITS - 1}): "
            f"make more nodes (cd /dev && sh MAKEDEV {prefix}{UNITS - 1}) or close some"
        )

    @classmethod
    def _open(cls, sys: System, path: str, name: str) -> int | None:
        """The fd, or None where the node does not exist."""
        try:
            return sys.open(path, os.O_RDWR)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno == errno.EBUSY:
                raise InterfaceExistsError(f"{name} is open in another process: pick another unit") from None
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise DevicePermissionError(f"opening {path} was refused: run as root (sudo)") from None
            if exc.errno == errno.ENXIO:
                raise TunUnavailableError(
                    f"opening {path}: the kernel has no {name.rstrip('0123456789')} driver "
                    f"(load it: kldload if_{name.rstrip('0123456789')})"
                ) from None
            raise DeviceError(f"opening {path} failed: {exc.strerror or exc}") from None

    @classmethod
    def _ifcreate(cls, sys: System, name: str) -> None:
        fd = sys.socket(A.AF_INET, socket.SOCK_DGRAM, 0)
        try:
            sys.ioctl(fd, cls.abi.SIOCIFCREATE, wire.ifreq(cls.abi, name))
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                if exc.errno in (errno.EPERM, errno.EACCES):
                    raise DevicePermissionError(f"creating {name} needs root: run as root (sudo)") from None
                raise DeviceError(f"SIOCIFCREATE {name} failed: {exc.strerror or exc}") from None
        finally:
            sys.close(fd)

    @classmethod
    def _gifname(cls, sys: System, fd: int) -> str:
        assert cls.tun.gifname is not None
        out = sys.ioctl(fd, cls.tun.gifname, wire.ifreq_blank(cls.abi))
        assert isinstance(out, bytearray)
        return wire.read_name(out)

    @classmethod
    def from_fd(cls, fd: int, *, owned: bool, sys: System | None = None) -> DeviceBackend:
        """A tun/tap fd opened elsewhere (a parent, a privileged helper): never destroyed here."""
        sys = sys or cls.system()
        if fd < 0:
            raise ValueError(f"fd: {fd} is not a file descriptor")
        name = cls.name_of_fd(sys, fd)
        layer = Layer.L2 if name.startswith("tap") else Layer.L3
        header = True
        if layer is Layer.L3 and cls.tun.tungifhead is not None:
            out = sys.ioctl(fd, cls.tun.tungifhead, bytearray(4))
            assert isinstance(out, bytearray)
            header = bool(struct.unpack("i", out)[0])  # the owner's framing is kept as it is
        return cls(sys, layer, fd, name, owned=owned, created=False, af_header=header)

    @classmethod
    def name_of_fd(cls, sys: System, fd: int) -> str:
        try:
            if cls.tun.gifname is not None and cls.tun.gifname_tun:
                return cls._gifname(sys, fd)
            name = sys.device_name(fd)
        except OSError as exc:
            raise DeviceError(f"fd {fd} is not a tun or tap device ({exc.strerror or exc})") from None
        if not re.fullmatch(r"(tun|tap)\d+", name):
            if cls.tun.gifname is not None:  # NetBSD's cloned taps: ask the device
                with contextlib.suppress(OSError):
                    return cls._gifname(sys, fd)
            raise DeviceError(f"fd {fd} is {name!r}, not a tun or tap device")
        return name

    # ---- helpers ------------------------------------------------------------------------------
    def _set_int(self, request: int, value: int, what: str) -> None:
        try:
            self.sys.ioctl(self._check(), request, bytearray(struct.pack("i", value)))
        except OSError as exc:
            raise DeviceError(f"{what} on {self._name} failed: {exc.strerror or exc}") from None

    # ---- configuration ------------------------------------------------------------------------
    def configured(self, settings: LinkSettings) -> None:
        for v6 in settings.ipv6:
            self.wait_dad(v6.ip)

    def address_flags(self, address: ipaddress.IPv6Address) -> int:
        """The IN6_IFF_* flags of one address (SIOCGIFAFLAG_IN6)."""
        req = wire.in6_ifreq(self.abi, self._name, address)
        what = f"reading the flags of {address}"
        out = self.iface.request(self.abi.af_inet6, self.tun.SIOCGIFAFLAG_IN6, req, what)
        return wire.read_int(out)

    # ---- frames -------------------------------------------------------------------------------
    def recv_into(self, buffer: WritableBuffer) -> int:
        return self._frames.recv_into(self._check(), buffer)

    def send(self, data: Bytes) -> int:
        return self._frames.send(self._check(), data)

    def recv_vectored(self, buffers: Sequence[WritableBuffer]) -> int:
        return self._frames.recv_vectored(self._check(), buffers)

    def send_vectored(self, buffers: Sequence[Bytes]) -> int:
        return self._frames.send_vectored(self._check(), buffers)

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self, *, release: bool = False) -> int | None:
        if release:
            fd = self._check()
            self._fd = -1
            return fd
        fd, self._fd = self._fd, -1
        if fd < 0:
            return None
        self.iface.delete_routes()
        if not self._owned:
            return None
        self.sys.close(fd)
        if self.created:
            with contextlib.suppress(DeviceError):  # some units go with their last close
                self.iface.destroy()
        return None


def wait_tentative(dev: CharDevice, address: ipaddress.IPv6Address, timeout: float = DAD_WAIT) -> None:
    """Poll SIOCGIFAFLAG_IN6 until the address is no longer tentative (DAD done)."""
    deadline = time.monotonic() + timeout
    while True:
        flags = dev.address_flags(address)
        if flags & A.IN6_IFF_DUPLICATED:
            raise DeviceError(
                f"{address} on {dev.config.name()} is a duplicate (DAD failed): pick another address"
            )
        if not flags & A.IN6_IFF_TENTATIVE:
            return
        if time.monotonic() >= deadline:
            raise DeviceError(
                f"{address} on {dev.config.name()} stayed tentative for {timeout:g} s (duplicate address "
                "detection did not finish)"
            )
        time.sleep(0.05)
