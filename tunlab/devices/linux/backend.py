"""LinuxDevice: a /dev/net/tun queue fd plus netlink configuration of its interface.

The fd is opened by a thread inside the target namespace, so the interface is born there and
never appears in the caller's namespace. Configuration finds the interface's *current*
namespace with TUNGETDEVNETNS, so it keeps working after the interface moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tunlab.devices.backend import DeviceBackend, IPAddress, IPInterface
from tunlab.devices.capabilities import Capability
from tunlab.devices.config import DeviceConfig, check_name
from tunlab.devices.layer import Layer
from tunlab.devices.linux import ioctl as tun
from tunlab.errors import (
    DeviceClosedError,
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    InterfaceNotFoundError,
    OffloadUnavailableError,
    TunUnavailableError,
)
from tunlab.linux.netns import NetNamespace, call_in_netns, run_in_thread

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")
TUN_PATH = "/dev/net/tun"
IFA_F_NODAD = 0x02
VNET_HDR_LEN = 10
_OFFLOAD_TCP = tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6
_OFFLOAD_UDP = tun.TUN_F_USO4 | tun.TUN_F_USO6
_INT = struct.Struct("i")


def _ns_label(ns: NetNamespace | None) -> str:
    if ns is None:
        return "the current network namespace"
    return f"namespace '{ns.name or ns.path}'"


def _open_queue(name: str, flags: int, ns: NetNamespace | None, kind: str) -> tuple[int, str, int]:
    """Open /dev/net/tun and TUNSETIFF (inside ns); returns (fd, actual name, kernel flags)."""

    def attach() -> tuple[int, str, int]:
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
            out = fcntl.ioctl(fd, tun.TUNSETIFF, tun.pack_ifreq_flags(name, flags))
            actual, _ = tun.unpack_ifreq_flags(out)
            _, kflags = tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            os.close(fd)
            raise _setiff_error(exc, name, kind, ns) from None
        return fd, actual, kflags

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


def _off_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a netlink-using method in a worker thread when an asyncio loop runs in this one.

    pyroute2's synchronous IPRoute drives its own event loop and refuses to start inside a
    running one; a SyncDevice used from async code would otherwise fail with a confusing error.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        return run_in_thread(functools.partial(fn, *args, **kwargs), "tunlab-netlink")

    return wrapper


def _netlink_error(operation: str, exc: Exception, name: str) -> DeviceError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None) or errno.EIO
    text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    if code == errno.EPERM:
        return DevicePermissionError(f"{operation} on '{name}' needs CAP_NET_ADMIN: run as root")
    if code == errno.ENODEV:
        return InterfaceNotFoundError(f"{operation}: interface '{name}' no longer exists")
    return DeviceError(f"{operation} on '{name}' failed: {text}", code)


class LinuxDevice(DeviceBackend):
    """One queue of a Linux TUN/TAP interface."""

    platform: ClassVar[str] = "linux"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(
        self,
        fd: int,
        layer: Layer,
        *,
        flags: int,
        owned: bool = True,
        home: NetNamespace | None = None,
    ) -> None:
        super().__init__(fd, layer, owned=owned)
        self._flags = flags & (
            tun.IFF_TUN | tun.IFF_TAP | tun.IFF_NO_PI | tun.IFF_VNET_HDR | tun.IFF_MULTI_QUEUE
        )
        self._home = home  # namespace fallback when TUNGETDEVNETNS is unavailable
        self._created_persistent = False
        self._offload_mask = 0
        self.vnet_hdr = bool(flags & tun.IFF_VNET_HDR)
        self.packet_information = not flags & tun.IFF_NO_PI
        self.multi_queue = bool(flags & tun.IFF_MULTI_QUEUE)

    # ---- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, config: DeviceConfig) -> LinuxDevice:
        kind = config.layer.kind
        flags = tun.IFF_TAP if config.layer is Layer.L2 else tun.IFF_TUN
        if not config.packet_information:
            flags |= tun.IFF_NO_PI
        if config.multi_queue:
            flags |= tun.IFF_MULTI_QUEUE
        if config.offload:
            flags |= tun.IFF_VNET_HDR
        ns = NetNamespace.open(config.netns) if config.netns else None
        try:
            fd, _name, kflags = _open_queue(config.name or "", flags, ns, kind)
        except BaseException:
            if ns is not None:
                ns.close()
            raise
        # TUNGETIFF reports IFF_NOFILTER with the value of IFF_NO_PI: trust what we asked for
        dev = cls(fd, config.layer, flags=flags | (kflags & tun.IFF_PERSIST), home=ns)
        try:
            dev._apply_offload(config.offload)
            if config.owner is not None:
                dev.set_owner(config.owner)
            if config.group is not None:
                dev.set_group(config.group)
            if config.persist and not kflags & tun.IFF_PERSIST:
                dev.set_persist(True)
                dev._created_persistent = True
        except BaseException:
            dev.destroy_on_failure()
            raise
        return dev

    @classmethod
    def from_fd(cls, fd: int, *, owned: bool) -> LinuxDevice:
        """Wrap an fd opened elsewhere (Android VpnService, a parent process, a test harness)."""
        if fd < 0:
            raise ValueError(f"fd: {fd} is not a file descriptor")
        try:
            _, flags = tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            if exc.errno in (errno.EBADF,):
                raise DeviceError(f"fd {fd} is not open", exc.errno) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                flags = tun.IFF_TUN | tun.IFF_NO_PI  # sandboxed (Android): assume a plain TUN
            else:
                raise DeviceError(
                    f"fd {fd} is not a TUN/TAP device fd (TUNGETIFF: {exc.strerror})",
                    exc.errno or errno.EINVAL,
                ) from None
        layer = Layer.L2 if flags & tun.IFF_TAP else Layer.L3
        dev = cls(fd, layer, flags=flags, owned=owned)
        # TUNGETIFF's 0x1000 means "no socket filter" (IFF_NOFILTER), not IFF_NO_PI: ask netlink
        dev.packet_information = dev._netlink_packet_information()
        if dev.vnet_hdr:
            size = _INT.unpack(fcntl.ioctl(fd, tun.TUNGETVNETHDRSZ, _INT.pack(0)))[0]
            if size != VNET_HDR_LEN:
                raise DeviceError(
                    f"fd {fd} uses a {size}-byte virtio-net header; tunlab handles "
                    f"{VNET_HDR_LEN} bytes (TUNSETVNETHDRSZ 10 before handing it over)",
                    errno.EINVAL,
                )
            dev.tcp_gso = True  # the kernel may hand over TSO super-packets on this fd
        return dev

    @_off_loop
    def _netlink_packet_information(self) -> bool:
        try:
            with self._netlink() as (ipr, index, _name):
                info = ipr.link("get", index=index)[0].get_attr("IFLA_LINKINFO")
                data = info.get_attr("IFLA_INFO_DATA") if info else None
                return bool(data and data.get_attr("IFLA_TUN_PI"))
        except (OSError, ValueError):
            return False  # sandboxed fds (Android VpnService) carry no PI header

    def _apply_offload(self, enable: bool) -> None:
        if not enable:
            # The offload mask is device-wide and survives on persistent devices: clear it, or
            # TCP breaks while ping still works (tun-rs PR #141).
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.fd, tun.TUNSETOFFLOAD, 0)
            self._offload_mask = 0
            return
        try:
            fcntl.ioctl(self.fd, tun.TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
            fcntl.ioctl(self.fd, tun.TUNSETOFFLOAD, _OFFLOAD_TCP)
        except OSError as exc:
            raise OffloadUnavailableError(
                f"enabling offload (TUNSETOFFLOAD CSUM|TSO4|TSO6) failed: {exc.strerror}; "
                "build without .offload(True)",
                exc.errno or errno.EOPNOTSUPP,
            ) from None
        self._offload_mask = _OFFLOAD_TCP
        try:
            fcntl.ioctl(self.fd, tun.TUNSETOFFLOAD, _OFFLOAD_TCP | _OFFLOAD_UDP)
            self._offload_mask |= _OFFLOAD_UDP
        except OSError:
            pass  # USO needs Linux >= 6.2; TCP offload alone is fine
        self.tcp_gso = True
        self.udp_gso = bool(self._offload_mask & _OFFLOAD_UDP)

    def set_offload(self, enable: bool) -> None:
        if enable and not self.vnet_hdr:
            raise OffloadUnavailableError(
                "offload needs a device built with .offload(True) (IFF_VNET_HDR is fixed at creation)"
            )
        self._apply_offload(enable)
        if not enable:
            self.tcp_gso = self.udp_gso = False

    # ---- the fd -----------------------------------------------------------------------------
    def _fd(self) -> int:
        if self.fd < 0:
            raise DeviceClosedError()
        return self.fd

    def _getiff(self) -> tuple[str, int]:
        fd = self._fd()
        try:
            return tun.unpack_ifreq_flags(fcntl.ioctl(fd, tun.TUNGETIFF, bytes(tun.IFREQ_SIZE)))
        except OSError as exc:
            if exc.errno == errno.EBADFD:
                raise InterfaceNotFoundError("the interface behind this fd was removed") from None
            raise DeviceError(f"TUNGETIFF failed: {exc.strerror}", exc.errno or 0) from None

    def name(self) -> str:
        return self._getiff()[0]

    def is_persistent(self) -> bool:
        return bool(self._getiff()[1] & tun.IFF_PERSIST)

    def set_persist(self, persist: bool) -> None:
        fd = self._fd()
        try:
            fcntl.ioctl(fd, tun.TUNSETPERSIST, int(persist))
        except OSError as exc:
            raise self._ioctl_error("TUNSETPERSIST", exc) from None

    def set_owner(self, uid: int) -> None:
        fd = self._fd()
        try:
            fcntl.ioctl(fd, tun.TUNSETOWNER, uid)
        except OSError as exc:
            raise self._ioctl_error("TUNSETOWNER", exc) from None

    def set_group(self, gid: int) -> None:
        fd = self._fd()
        try:
            fcntl.ioctl(fd, tun.TUNSETGROUP, gid)
        except OSError as exc:
            raise self._ioctl_error("TUNSETGROUP", exc) from None

    def _ioctl_error(self, what: str, exc: OSError) -> DeviceError:
        if exc.errno == errno.EPERM:
            return DevicePermissionError(f"{what} needs CAP_NET_ADMIN: run as root")
        return DeviceError(f"{what} failed: {exc.strerror}", exc.errno or 0)

    def try_clone(self) -> LinuxDevice:
        if not self.multi_queue:
            raise DeviceError(
                "try_clone needs a multi-queue device: build it with .multi_queue(True)",
                errno.EINVAL,
            )
        name = self.name()
        ns = self._netns()
        try:
            fd, _, kflags = _open_queue(name, self._flags, ns, self.layer.kind)
        finally:
            ns.close()
        clone = LinuxDevice(fd, self.layer, flags=kflags)
        try:
            if self.vnet_hdr:
                fcntl.ioctl(fd, tun.TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
                fcntl.ioctl(fd, tun.TUNSETOFFLOAD, self._offload_mask)
            clone._offload_mask = self._offload_mask
            clone.tcp_gso, clone.udp_gso = self.tcp_gso, self.udp_gso
        except OSError as exc:
            clone.close()
            raise OffloadUnavailableError(f"offload on the new queue: {exc.strerror}") from None
        return clone

    def attach_queue(self, attach: bool) -> None:
        if not self.multi_queue:
            raise DeviceError("attach_queue needs a multi-queue device", errno.EINVAL)
        flag = tun.IFF_ATTACH_QUEUE if attach else tun.IFF_DETACH_QUEUE
        fd = self._fd()
        try:
            fcntl.ioctl(fd, tun.TUNSETQUEUE, tun.pack_ifreq_flags("", flag))
        except OSError as exc:
            raise self._ioctl_error("TUNSETQUEUE", exc) from None

    # ---- namespace and netlink ----------------------------------------------------------------
    def _netns(self) -> NetNamespace:
        """The namespace the interface lives in now (the caller closes it)."""
        fd = self._fd()
        try:
            nsfd = fcntl.ioctl(fd, tun.TUNGETDEVNETNS)
        except OSError as exc:
            if exc.errno == errno.EBADFD:
                raise InterfaceNotFoundError("the interface behind this fd was removed") from None
            if self._home is not None:
                return NetNamespace.open(self._home.path)
            return NetNamespace.current()
        return NetNamespace.from_fd(nsfd)

    def netns(self) -> NetNamespace:
        """The network namespace the interface currently lives in."""
        return self._netns()

    @contextlib.contextmanager
    def _netlink(self) -> Iterator[tuple[IPRoute, int, str]]:
        """(IPRoute in the interface's namespace, ifindex, name) for one configuration step."""
        name = self.name()
        ns = self._netns()
        try:
            ipr = ns.iproute()
        finally:
            ns.close()
        try:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise InterfaceNotFoundError(f"interface '{name}' is not visible over netlink")
            yield ipr, int(found[0]), name
        finally:
            ipr.close()

    @_off_loop
    def _link_attr(self, attr: str) -> Any:
        with self._netlink() as (ipr, index, name):
            try:
                msg = ipr.link("get", index=index)[0]
            except Exception as exc:
                raise _netlink_error("reading link", exc, name) from None
            if attr == "flags":
                return msg["flags"]
            return msg.get(attr)

    @_off_loop
    def _link_set(self, operation: str, **kwargs: Any) -> None:
        with self._netlink() as (ipr, index, name):
            try:
                ipr.link("set", index=index, **kwargs)
            except DeviceError:
                raise
            except Exception as exc:
                raise _netlink_error(operation, exc, name) from None

    @_off_loop
    def if_index(self) -> int:
        with self._netlink() as (_ipr, index, _name):
            return index

    @_off_loop
    def set_name(self, name: str) -> None:
        check_name(name)
        with self._netlink() as (ipr, index, old):
            try:
                up = bool(ipr.link("get", index=index)[0]["flags"] & tun.IFF_UP)
                if up:
                    ipr.link("set", index=index, state="down")
                try:
                    ipr.link("set", index=index, ifname=name)
                finally:
                    if up:
                        ipr.link("set", index=index, state="up")
            except Exception as exc:
                code = getattr(exc, "code", None)
                if code == errno.EEXIST:
                    raise InterfaceExistsError(
                        f"set_name: an interface named '{name}' already exists in the namespace of '{old}'"
                    ) from None
                raise _netlink_error(f"renaming to '{name}'", exc, old) from None

    def mtu(self) -> int:
        return int(self._link_attr("IFLA_MTU"))

    def set_mtu(self, mtu: int) -> None:
        self._link_set(f"setting MTU {mtu}", mtu=mtu)

    def tx_queue_len(self) -> int:
        return int(self._link_attr("IFLA_TXQLEN"))

    def set_tx_queue_len(self, length: int) -> None:
        self._link_set(f"setting txqueuelen {length}", txqlen=length)

    def enabled(self, up: bool) -> None:
        self._link_set("bringing the link " + ("up" if up else "down"), state="up" if up else "down")

    def is_running(self) -> bool:
        flags = int(self._link_attr("flags"))
        return bool(flags & tun.IFF_UP) and bool(flags & tun.IFF_RUNNING)

    def mac_address(self) -> str:
        if self.layer is not Layer.L2:
            self.unsupported("mac_address (TUN devices have no MAC; use Layer.L2)")
        return str(self._link_attr("IFLA_ADDRESS"))

    def set_mac_address(self, mac: str) -> None:
        if self.layer is not Layer.L2:
            self.unsupported("set_mac_address (TUN devices have no MAC; use Layer.L2)")
        self._link_set(f"setting MAC {mac}", address=mac)

    # ---- addresses --------------------------------------------------------------------------
    def _dump_addresses(self, ipr: IPRoute, index: int) -> list[tuple[IPInterface, Any]]:
        out: list[tuple[IPInterface, Any]] = []
        for msg in ipr.get_addr(index=index):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if local is None:
                continue
            out.append((ipaddress.ip_interface(f"{local}/{msg['prefixlen']}"), msg))
        return out

    @_off_loop
    def addresses(self) -> list[IPInterface]:
        with self._netlink() as (ipr, index, name):
            try:
                return [iface for iface, _ in self._dump_addresses(ipr, index)]
            except Exception as exc:
                raise _netlink_error("listing addresses", exc, name) from None

    def add_address_v4(
        self, interface: ipaddress.IPv4Interface, destination: ipaddress.IPv4Address | None
    ) -> None:
        kwargs: dict[str, Any] = {
            "local": str(interface.ip),
            "address": str(destination or interface.ip),
            "prefixlen": interface.network.prefixlen,
        }
        if destination is None and self.layer is Layer.L2 and interface.network.prefixlen < 31:
            kwargs["broadcast"] = str(interface.network.broadcast_address)
        self._add_address(str(interface), kwargs)

    def add_address_v6(self, interface: ipaddress.IPv6Interface) -> None:
        kwargs = {
            "address": str(interface.ip),
            "prefixlen": interface.network.prefixlen,
            "flags": IFA_F_NODAD,  # usable at once: no duplicate-address-detection wait
        }
        self._add_address(str(interface), kwargs)

    @_off_loop
    def _add_address(self, label: str, kwargs: dict[str, Any]) -> None:
        with self._netlink() as (ipr, index, name):
            try:
                ipr.addr("add", index=index, **kwargs)
            except Exception as exc:
                code = getattr(exc, "code", None)
                if code == errno.EEXIST:
                    raise DeviceError(f"address {label} is already on '{name}'", errno.EEXIST) from None
                if code in (errno.EACCES, errno.EINVAL) and ":" in label:
                    mtu = ipr.link("get", index=index)[0].get_attr("IFLA_MTU")
                    if mtu is not None and mtu < 1280:
                        why = f"IPv6 is disabled on it: it needs MTU >= 1280 (MTU is {mtu})"
                    elif code == errno.EACCES:
                        why = "IPv6 is disabled on it (net.ipv6.conf.*.disable_ipv6=1)"
                    else:
                        why = os.strerror(code)
                    raise DeviceError(f"adding address {label} on '{name}' failed: {why}", code) from None
                raise _netlink_error(f"adding address {label}", exc, name) from None

    @_off_loop
    def remove_address(self, address: IPAddress) -> None:
        with self._netlink() as (ipr, index, name):
            matches = [m for iface, m in self._dump_addresses(ipr, index) if iface.ip == address]
            if not matches:
                raise DeviceError(f"remove_address: {address} is not on '{name}'", errno.EADDRNOTAVAIL)
            msg = matches[0]
            kwargs: dict[str, Any] = {"prefixlen": msg["prefixlen"], "family": msg["family"]}
            kwargs["address"] = msg.get("IFA_ADDRESS")
            if msg.get("IFA_LOCAL"):
                kwargs["local"] = msg.get("IFA_LOCAL")
            try:
                ipr.addr("del", index=index, **kwargs)
            except Exception as exc:
                raise _netlink_error(f"removing address {address}", exc, name) from None

    def _v4_messages(self, ipr: IPRoute, index: int) -> list[tuple[IPInterface, Any]]:
        """IPv4 addresses ordered by address, so 'the first' does not depend on kernel order."""
        found = [(i, m) for i, m in self._dump_addresses(ipr, index) if i.version == 4]
        return sorted(found, key=lambda pair: pair[0].ip)

    @_off_loop
    def broadcast(self) -> ipaddress.IPv4Address | None:
        with self._netlink() as (ipr, index, _name):
            v4 = self._v4_messages(ipr, index)
            if not v4 or not v4[0][1].get("IFA_BROADCAST"):
                return None
            return ipaddress.IPv4Address(v4[0][1].get("IFA_BROADCAST"))

    @_off_loop
    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        """Set the broadcast of the IPv4 address whose subnet holds it (else the first one)."""
        with self._netlink() as (ipr, index, name):
            v4 = self._v4_messages(ipr, index)
            if not v4:
                raise DeviceError(
                    f"set_broadcast: '{name}' has no IPv4 address to set a broadcast for",
                    errno.EADDRNOTAVAIL,
                )
            iface, msg = next(((i, m) for i, m in v4 if address in i.network), v4[0])
            keep = {
                "local": msg.get("IFA_LOCAL"),
                "address": msg.get("IFA_ADDRESS"),
                "prefixlen": msg["prefixlen"],
            }
            try:
                # the kernel ignores IFA_BROADCAST on NLM_F_REPLACE: re-create the address
                ipr.addr("del", index=index, **keep)
                ipr.addr("add", index=index, broadcast=str(address), **keep)
            except Exception as exc:
                raise _netlink_error(f"setting broadcast {address} on {iface}", exc, name) from None

    # ---- lifetime ---------------------------------------------------------------------------
    def destroy_on_failure(self) -> None:
        if self._created_persistent and self.fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.fd, tun.TUNSETPERSIST, 0)
        self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0 and self.owned:
            os.close(fd)
        if self._home is not None:
            self._home.close()
            self._home = None
