"""LinuxDevice: a /dev/net/tun queue fd plus netlink configuration of its interface.

The fd is opened by a thread inside the target namespace, so the interface is born there and
never appears in the caller's namespace; the same thread opens the device's netlink socket, so
creating and configuring a device costs one namespace switch and one netlink batch. Frames
are exactly what the kernel passes (a bare readv/writev): the PI header and the virtio-net
header stay in front when asked for. Configuration finds the interface's *current* namespace
with TUNGETDEVNETNS, so it keeps working after the interface moves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import MutableSequence, Sequence
from typing import ClassVar

from tunlab._linux.netlink import NetlinkSession
from tunlab._linux.netns import NetNamespace, call_in_netns
from tunlab.devices._backend import (
    Bytes,
    Configurator,
    DeviceBackend,
    FrameFormat,
    FrameTooLarge,
    Handoff,
    IPAddress,
    IPInterface,
    WritableBuffer,
    handoff_spec,
)
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig, LinkSettings, check_name
from tunlab.devices._layer import Layer
from tunlab.devices._linux import ioctl as tun
from tunlab.devices._linux.link import IFF_RUNNING, IFF_UP, Link
from tunlab.devices._readiness import PollTarget, Readiness
from tunlab.errors import (
    DeviceClosedError,
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    InterfaceNotFoundError,
    OffloadUnavailableError,
    TunUnavailableError,
)

TUN_PATH = "/dev/net/tun"
VNET_HDR_LEN = 10
PI_LEN = 4
_OFFLOAD_TCP = tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6
_OFFLOAD_UDP = tun.TUN_F_USO4 | tun.TUN_F_USO6
_INT = struct.Struct("i")
_KEPT_FLAGS = tun.IFF_TUN | tun.IFF_TAP | tun.IFF_NO_PI | tun.IFF_VNET_HDR | tun.IFF_MULTI_QUEUE
_SPILL = 65535 + 64


def _ns_label(ns: NetNamespace | None) -> str:
    if ns is None:
        return "the current network namespace"
    return f"namespace '{ns.name or ns.path}'"


def _open_queue(
    name: str, flags: int, ns: NetNamespace | None, kind: str, *, netlink: bool
) -> tuple[int, int, socket.socket | None]:
    """Open /dev/net/tun and TUNSETIFF inside ns: (fd, kernel flags, netlink socket there)."""

    def attach() -> tuple[int, int, socket.socket | None]:
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunUnavailableError(
                f"no {TUN_PATH}: the tun module is missing (modprobe tun); in a container, "
                "pass --device /dev/net/tun"
            ) from None
        except PermissionError:
            raise DevicePermissionError(
                f"opening {TUN_PATH} was refused: creating {kind.upper()} device "
                f"'{name or kind + '%d'}' needs CAP_NET_ADMIN: run as root"
            ) from None
        try:
            fcntl.ioctl(fd, tun.TUNSETIFF, tun.pack_ifreq_flags(name, flags))
            _, kflags = tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            os.close(fd)
            raise _setiff_error(exc, name, kind, ns) from None
        sock = None
        if netlink:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        return fd, kflags, sock

    if ns is None:
        return attach()
    return call_in_netns(ns.fd, attach)


def _name_exists(name: str, ns: NetNamespace | None) -> bool:
    if not name:
        return False
    try:
        if ns is None:
            socket.if_nametoindex(name)
        else:
            call_in_netns(ns.fd, socket.if_nametoindex, name)
    except OSError:
        return False
    return True


def _setiff_error(exc: OSError, name: str, kind: str, ns: NetNamespace | None) -> DeviceError:
    label = name or f"{kind}%d"
    where = _ns_label(ns)
    if exc.errno == errno.EPERM:
        return DevicePermissionError(
            f"creating {kind.upper()} device '{label}' needs CAP_NET_ADMIN: run as root "
            "(or, for an existing persistent device, be its owner/group)"
        )
    if exc.errno == errno.EBUSY or (exc.errno == errno.EINVAL and _name_exists(name, ns)):
        return InterfaceExistsError(
            f"an interface named '{name}' already exists in {where}: pick another name, remove "
            f"it, or attach with the same layer and flags (multi_queue for several fds)"
        )
    return DeviceError(f"TUNSETIFF for '{label}' in {where} failed: {exc.strerror}", exc.errno or 0)


def _open_netns(spec: str | NetNamespace | None) -> tuple[NetNamespace | None, bool]:
    """The namespace to create in, and whether we opened it (a caller's object is used as is)."""
    if spec is None:
        return None, False
    if isinstance(spec, NetNamespace):
        return spec, False
    return NetNamespace.open(spec), True


# what every Linux TUN/TAP device can do; TAP adds its own (Windows-only options are not here)
_CAPABILITIES = frozenset(
    {
        Capability.SET_NAME,
        Capability.ADDRESSES,
        Capability.MTU,
        Capability.BROADCAST,
        Capability.TX_QUEUE_LEN,
        Capability.PERSIST,
        Capability.OWNER,
        Capability.MULTI_QUEUE,
        Capability.OFFLOAD,
        Capability.PACKET_INFORMATION,
        Capability.NETNS,
        Capability.ENABLE,
        Capability.FROM_FD,
        Capability.IF_INDEX,
        Capability.FD,
        Capability.VECTORED,
        Capability.HANDOFF,
    }
)


class LinuxDevice(DeviceBackend):
    """One queue of a Linux TUN/TAP interface: the fd and its frames (config: LinuxConfig)."""

    platform: ClassVar[str] = "linux"

    def __init__(
        self,
        fd: int,
        layer: Layer,
        *,
        flags: int,
        owned: bool = True,
        home: NetNamespace | None = None,
        netlink: socket.socket | None = None,
    ) -> None:
        super().__init__(layer, owned=owned, capabilities=self.capabilities_for(layer))
        self._fd = fd
        self._flags = flags & _KEPT_FLAGS
        self._created_persistent = False
        self._offload_mask = 0
        self._nonblocking = not os.get_blocking(fd)
        self._spill: bytearray | None = None
        self._readiness = Readiness(PollTarget(fd), PollTarget(fd, writable=True))
        self.config: LinuxConfig = LinuxConfig(self, home, netlink)
        self._set_format(tcp=False, udp=False)

    @classmethod
    def capabilities_for(cls, layer: Layer) -> frozenset[Capability]:
        if layer is Layer.L2:
            return _CAPABILITIES | {Capability.TAP, Capability.MAC}
        return _CAPABILITIES

    def _set_format(self, *, tcp: bool, udp: bool) -> None:
        vnet = bool(self._flags & tun.IFF_VNET_HDR)
        pi = not self._flags & tun.IFF_NO_PI
        prefix = (VNET_HDR_LEN if vnet else 0) + (PI_LEN if pi else 0)
        self.frame_format = FrameFormat(prefix, vnet, tcp, udp, packet_information=pi, fd_frames=True)

    # ---- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, config: DeviceConfig) -> LinuxDevice:
        kind = config.layer.kind
        lx = config.linux
        flags = tun.IFF_TAP if config.layer is Layer.L2 else tun.IFF_TUN
        if not config.packet_information:
            flags |= tun.IFF_NO_PI
        if lx.multi_queue:
            flags |= tun.IFF_MULTI_QUEUE
        if lx.offload:
            flags |= tun.IFF_VNET_HDR
        ns, opened = _open_netns(lx.netns)
        try:
            fd, kflags, sock = _open_queue(config.name or "", flags, ns, kind, netlink=True)
        except BaseException:
            if ns is not None and opened:
                ns.close()
            raise
        # TUNGETIFF reports IFF_NOFILTER with the value of IFF_NO_PI: trust what we asked for
        dev = cls(fd, config.layer, flags=flags, home=ns, netlink=sock)
        dev.config.owns_home = opened
        try:
            dev._apply_offload(lx.offload)
            if lx.owner is not None:
                dev.config.set_owner(lx.owner)
            if lx.group is not None:
                dev.config.set_group(lx.group)
            if config.persist and not kflags & tun.IFF_PERSIST:
                dev.config.set_persist(True)
                dev._created_persistent = True
            dev.config.configure(config.link_settings())
        except BaseException:
            dev._destroy()
            raise
        return dev

    @classmethod
    def from_fd(cls, fd: int, *, owned: bool) -> LinuxDevice:
        """Wrap an fd opened elsewhere (Android VpnService, a parent process, a test harness)."""
        if fd < 0:
            raise ValueError(f"fd: {fd} is not a file descriptor")
        sandboxed = False
        try:
            _, flags = tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            if exc.errno in (errno.EBADF,):
                raise DeviceError(f"fd {fd} is not open", exc.errno) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                flags = tun.IFF_TUN | tun.IFF_NO_PI  # sandboxed (Android): assume a plain TUN
                sandboxed = True
            else:
                raise DeviceError(
                    f"fd {fd} is not a TUN/TAP device fd (TUNGETIFF: {exc.strerror})",
                    exc.errno or errno.EINVAL,
                ) from None
        layer = Layer.L2 if flags & tun.IFF_TAP else Layer.L3
        # TUNGETIFF's 0x1000 means "no socket filter" (IFF_NOFILTER), not IFF_NO_PI: ask netlink
        flags |= tun.IFF_NO_PI
        dev = cls(fd, layer, flags=flags, owned=owned)
        if not sandboxed and dev.config.netlink_packet_information():
            dev._flags &= ~tun.IFF_NO_PI
        tcp = False
        if dev.vnet_hdr:
            size = _INT.unpack(fcntl.ioctl(fd, tun.TUNGETVNETHDRSZ, _INT.pack(0)))[0]
            if size != VNET_HDR_LEN:
                raise DeviceError(
                    f"fd {fd} uses a {size}-byte virtio-net header; tunlab handles "
                    f"{VNET_HDR_LEN} bytes (TUNSETVNETHDRSZ 10 before handing it over)",
                    errno.EINVAL,
                )
            tcp = True  # the kernel may hand over TSO super-packets on this fd
        dev._set_format(tcp=tcp, udp=False)
        return dev

    @classmethod
    def from_handoff(cls, fds: Sequence[int], spec: dict[str, str | int | bool]) -> LinuxDevice:
        """The frame I/O of a device handed over by handoff() (no netlink: workers only move frames)."""
        layer = Layer(str(spec["layer"]))
        dev = cls(fds[0], layer, flags=int(spec["flags"]), owned=True)
        dev._set_format(tcp=bool(spec["tcp_gso"]), udp=bool(spec["udp_gso"]))
        return dev

    def handoff(self) -> Handoff:
        return Handoff((self._check(),), handoff_spec(self, flags=self._flags))

    @property
    def vnet_hdr(self) -> bool:
        return bool(self._flags & tun.IFF_VNET_HDR)

    def _apply_offload(self, enable: bool) -> None:
        if not enable:
            # The offload mask is device-wide and survives on persistent devices: clear it, or
            # TCP breaks while ping still works (tun-rs PR #141).
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, tun.TUNSETOFFLOAD, 0)
            self._offload_mask = 0
            self._set_format(tcp=False, udp=False)
            return
        try:
            fcntl.ioctl(self._fd, tun.TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
            fcntl.ioctl(self._fd, tun.TUNSETOFFLOAD, _OFFLOAD_TCP)
        except OSError as exc:
            raise OffloadUnavailableError(
                f"enabling offload (TUNSETOFFLOAD CSUM|TSO4|TSO6) failed: {exc.strerror}; "
                "build without .offload(True)",
                exc.errno or errno.EOPNOTSUPP,
            ) from None
        self._offload_mask = _OFFLOAD_TCP
        try:
            fcntl.ioctl(self._fd, tun.TUNSETOFFLOAD, _OFFLOAD_TCP | _OFFLOAD_UDP)
            self._offload_mask |= _OFFLOAD_UDP
        except OSError:
            pass  # USO needs Linux >= 6.2; TCP offload alone is fine
        self._set_format(tcp=True, udp=bool(self._offload_mask & _OFFLOAD_UDP))

    # ---- the fd and frame I/O ---------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _check(self) -> int:
        if self._fd < 0:
            raise DeviceClosedError()
        return self._fd

    def fileno(self) -> int:
        return self._check()

    def recv_into(self, buffer: WritableBuffer) -> int:
        return os.readv(self._check(), (buffer,))

    def send(self, data: Bytes) -> int:
        return os.write(self._check(), data)

    def recv_vectored(self, buffers: Sequence[WritableBuffer]) -> int:
        return os.readv(self._check(), buffers)

    def send_vectored(self, buffers: Sequence[Bytes]) -> int:
        return os.writev(self._check(), buffers)

    def recv_batch(self, bufs: Sequence[WritableBuffer], sizes: MutableSequence[int], offset: int) -> int:
        """Straight into the caller's buffers; a spill buffer behind each catches oversize frames."""
        fd = self._check()
        spill = self._spill
        if spill is None:
            spill = self._spill = bytearray(_SPILL)
        readv = os.readv
        count = 0
        for buf in bufs:
            view = memoryview(buf)[offset:]
            try:
                n = readv(fd, (view, spill))
            except BlockingIOError:
                if count:
                    return count
                raise
            room = len(view)
            if n > room:
                raise FrameTooLarge(bytes(view) + bytes(spill[: n - room]), delivered=count)
            sizes[count] = n
            count += 1
            if not self._nonblocking:
                break
        return count

    def readiness(self) -> Readiness:
        self._check()
        return self._readiness

    def _set_blocking_mode(self, nonblocking: bool) -> None:
        os.set_blocking(self._check(), not nonblocking)

    def _ioctl(self, what: str, request: int, arg: int | bytes) -> None:
        fd = self._check()
        try:
            fcntl.ioctl(fd, request, arg)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise DevicePermissionError(f"{what} needs CAP_NET_ADMIN: run as root") from None
            raise DeviceError(f"{what} failed: {exc.strerror}", exc.errno or 0) from None

    def _getiff(self) -> tuple[str, int]:
        fd = self._check()
        try:
            return tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            if exc.errno == errno.EBADFD:
                raise InterfaceNotFoundError("the interface behind this fd was removed") from None
            raise DeviceError(f"TUNGETIFF failed: {exc.strerror}", exc.errno or 0) from None

    # ---- lifetime ---------------------------------------------------------------------------
    def _destroy(self) -> None:
        """Build rollback: a persistent device this build made persistent goes too."""
        if self._created_persistent and self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, tun.TUNSETPERSIST, 0)
        self.close()

    def close(self, *, release: bool = False) -> int | None:
        fd, self._fd = self._fd, -1
        if release and fd < 0:
            raise DeviceClosedError()
        if fd >= 0 and self._owned and not release:
            os.close(fd)
        self.config.release()
        return fd if release else None


class LinuxConfig(Configurator):
    """The interface behind a LinuxDevice: TUN ioctls on its fd and netlink in the namespace the
    interface lives in now (found with TUNGETDEVNETNS, so it follows a moved interface)."""

    def __init__(self, device: LinuxDevice, home: NetNamespace | None, netlink: socket.socket | None) -> None:
        super().__init__(device)
        self.dev = device
        self.home = home  # namespace fallback when TUNGETDEVNETNS is unavailable
        self.owns_home = False
        self._lock = threading.Lock()
        self._link: Link | None = None
        self._link_ns: tuple[int, int] | None = None
        if netlink is not None:
            session = NetlinkSession(home, sock=netlink)
            self._link_ns = home.inode if home is not None else _current_inode()
            self._link = Link(session, 0, "", device.layer)

    def release(self) -> None:
        """The netlink session and the namespace this configurator holds (on close)."""
        with self._lock:
            if self._link is not None:
                self._link.session.close()
                self._link = None
        if self.home is not None and self.owns_home:
            self.home.close()
        self.home = None

    # ---- ioctls on the fd -------------------------------------------------------------------
    def name(self) -> str:
        return self.dev._getiff()[0]

    def is_persistent(self) -> bool:
        return bool(self.dev._getiff()[1] & tun.IFF_PERSIST)

    def set_persist(self, persist: bool) -> None:
        self.dev._ioctl("TUNSETPERSIST", tun.TUNSETPERSIST, int(persist))

    def set_owner(self, uid: int) -> None:
        self.dev._ioctl("TUNSETOWNER", tun.TUNSETOWNER, uid)

    def set_group(self, gid: int) -> None:
        self.dev._ioctl("TUNSETGROUP", tun.TUNSETGROUP, gid)

    @property
    def multi_queue(self) -> bool:
        return bool(self.dev._flags & tun.IFF_MULTI_QUEUE)

    def open_queue(self) -> LinuxDevice:
        dev = self.dev
        if not self.multi_queue:
            raise DeviceError(
                "try_clone needs a multi-queue device: build it with .multi_queue(True)",
                errno.EINVAL,
            )
        name = self.name()
        ns = self.netns()
        try:
            fd, _, _ = _open_queue(name, dev._flags, ns, dev.layer.kind, netlink=False)
        finally:
            ns.close()
        clone = LinuxDevice(fd, dev.layer, flags=dev._flags)
        try:
            # the header size and the offload mask belong to the interface, not the queue: the
            # new queue has them already (setting the mask again would clear it on a device
            # this process only received by fd, whose mask it cannot read)
            if dev.vnet_hdr:
                fcntl.ioctl(fd, tun.TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
            clone._offload_mask = dev._offload_mask
            clone.frame_format = dev.frame_format
        except OSError as exc:
            clone.close()
            raise OffloadUnavailableError(f"offload on the new queue: {exc.strerror}") from None
        return clone

    def attach_queue(self, attach: bool) -> None:
        if not self.multi_queue:
            raise DeviceError("attach_queue needs a multi-queue device", errno.EINVAL)
        flag = tun.IFF_ATTACH_QUEUE if attach else tun.IFF_DETACH_QUEUE
        self.dev._ioctl("TUNSETQUEUE", tun.TUNSETQUEUE, tun.pack_ifreq_flags("", flag))

    # ---- namespace and netlink ----------------------------------------------------------------
    def netns(self) -> NetNamespace:
        """The namespace the interface lives in now (the caller closes it)."""
        fd = self.dev._check()
        try:
            nsfd = fcntl.ioctl(fd, tun.TUNGETDEVNETNS)
        except OSError as exc:
            if exc.errno == errno.EBADFD:
                raise InterfaceNotFoundError("the interface behind this fd was removed") from None
            if self.home is not None:
                return NetNamespace.from_fd(os.dup(self.home.fd))
            return NetNamespace.current()
        return NetNamespace.from_fd(nsfd)

    def _iface(self) -> Link:
        """The interface over this device's netlink session, re-made if the interface moved."""
        with self._lock:
            name = self.name()
            ns = self.netns()
            try:
                inode = ns.inode
                link = self._link
                if link is None or self._link_ns != inode:
                    if link is not None:
                        link.session.close()
                    self._link = None
                    link = Link(NetlinkSession(ns), 0, name, self.dev.layer)
                    self._link, self._link_ns = link, inode
            finally:
                ns.close()
            if link.index == 0 or link.name != name:
                try:
                    link.index = link.session.index_of(name)
                except OSError:
                    raise InterfaceNotFoundError(f"interface '{name}' is not visible over netlink") from None
                link.name = name
            return link

    def netlink_packet_information(self) -> bool:
        """Whether the interface keeps the PI header (IFLA_TUN_PI): what TUNGETIFF cannot say."""
        try:
            info = self._iface().attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            return bool(data and data.get_attr("IFLA_TUN_PI"))
        except (OSError, ValueError):
            return False  # sandboxed fds (Android VpnService) carry no PI header

    def configure(self, settings: LinkSettings) -> None:
        if settings.mac is not None and self.dev.layer is not Layer.L2:
            self._no("set_mac_address", Capability.MAC)
        self._iface().apply(settings)

    def if_index(self) -> int:
        return self._iface().index

    def set_name(self, name: str) -> None:
        check_name(name)
        self._iface().rename(name)

    def mtu(self) -> int:
        return int(self._iface().attr("IFLA_MTU"))

    def tx_queue_len(self) -> int:
        return int(self._iface().attr("IFLA_TXQLEN"))

    def is_running(self) -> bool:
        flags = self._iface().flags()
        return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)

    def mac_address(self) -> str:
        if self.dev.layer is not Layer.L2:
            self._no("mac_address", Capability.MAC)
        return str(self._iface().attr("IFLA_ADDRESS"))

    def addresses(self) -> list[IPInterface]:
        return [a.interface for a in self._iface().addresses()]

    def remove_address(self, address: IPAddress) -> None:
        self._iface().remove_address(address)

    def broadcast(self) -> ipaddress.IPv4Address | None:
        v4 = self._iface().ipv4()
        return v4[0].broadcast if v4 else None

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        self._iface().set_broadcast(address)


def _current_inode() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)
