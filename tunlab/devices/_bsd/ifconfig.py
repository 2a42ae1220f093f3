"""Interface configuration by ioctl and PF_ROUTE, shared by the macOS and BSD backends:
flags, MTU, MAC, IPv4/IPv6 addresses (with the routes a point-to-point link needs), removal.

Every call goes through a System, so tests replay them. Routes tunlab adds are remembered and
deleted when the device closes; addresses go with the interface.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

from tunlab.devices._bsd import wire
from tunlab.devices._bsd.abi import AF_INET, IFF_RUNNING, IFF_UP, RTM_ADD, RTM_DELETE, Abi
from tunlab.devices._bsd.system import System
from tunlab.errors import DeviceError, DevicePermissionError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _fail(what: str, name: str, exc: OSError) -> DeviceError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return DevicePermissionError(f"{what} on {name} was refused ({exc.strerror}): run as root")
    return DeviceError(f"{what} on {name} failed: {exc.strerror or exc}")


@dataclass
class Interface:
    """One interface by name: ioctls through sockets of the right families, routes it added."""

    sys: System
    abi: Abi
    name: str
    point_to_point: bool
    routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    _seq: int = 0

    def request(self, family: int, request: int, arg: bytearray, what: str) -> bytearray:
        fd = self.sys.socket(family, socket.SOCK_DGRAM, 0)
        try:
            out = self.sys.ioctl(fd, request, arg)
        except OSError as exc:
            raise _fail(what, self.name, exc) from None
        finally:
            self.sys.close(fd)
        assert isinstance(out, bytearray)
        return out

    # ---- flags and MTU ------------------------------------------------------------------------
    def _flags_request(self) -> bytearray:
        return self.request(
            AF_INET, self.abi.SIOCGIFFLAGS, wire.ifreq_short(self.abi, self.name), "SIOCGIFFLAGS"
        )

    def flags(self) -> int:
        return wire.read_short(self._flags_request())

    def set_up(self, up: bool) -> None:
        """Get-modify-set of the flags: the kernel's answer goes back with IFF_UP changed and
        nothing else (FreeBSD's ifr_flagshigh beside the 16 bits stays as it was)."""
        req = self._flags_request()
        flags = wire.read_short(req)
        new = flags | IFF_UP if up else flags & ~IFF_UP
        if new != flags:
            wire.set_short(req, new)
            self.request(AF_INET, self.abi.SIOCSIFFLAGS, req, "SIOCSIFFLAGS")

    def is_up(self) -> bool:
        return bool(self.flags() & IFF_UP)

    def is_running(self) -> bool:
        return bool(self.flags() & IFF_RUNNING)

    def mtu(self) -> int:
        return wire.read_int(
            self.request(AF_INET, self.abi.SIOCGIFMTU, wire.ifreq_int(self.abi, self.name), "SIOCGIFMTU")
        )

    def set_mtu(self, mtu: int) -> None:
        self.request(
            AF_INET, self.abi.SIOCSIFMTU, wire.ifreq_int(self.abi, self.name, mtu), f"setting MTU {mtu}"
        )

    def set_mac(self, mac: bytes) -> None:
        request = self.abi.SIOCSIFLLADDR
        if request is None:
            raise DeviceError(f"setting the MAC of {self.name}: this OS has no SIOCSIFLLADDR")
        self.request(AF_INET, request, wire.lladdr_ifreq(self.abi, self.name, mac), "setting the MAC")

    def destroy(self) -> None:
        self.request(AF_INET, self.abi.SIOCIFDESTROY, wire.ifreq(self.abi, self.name), "SIOCIFDESTROY")

    # ---- addresses ----------------------------------------------------------------------------
    def add_ipv4(self, iface: ipaddress.IPv4Interface, destination: ipaddress.IPv4Address | None) -> None:
        """SIOCAIFADDR. On a point-to-point link the second address is the peer: the given
        destination, else the subnet's broadcast address, and the subnet gets a route here."""
        net = iface.network
        dest: ipaddress.IPv4Address | None = destination
        if dest is None and net.prefixlen < 31:
            dest = net.broadcast_address
        elif dest is None and self.point_to_point:
            dest = iface.ip
        req = wire.ifaliasreq(self.abi, self.name, iface.ip, dest, net.netmask)
        self.request(AF_INET, self.abi.SIOCAIFADDR, req, f"adding {iface}")
        if self.point_to_point and net.prefixlen < 32 and destination is None:
            self.add_route(net)

    def add_ipv6(self, iface: ipaddress.IPv6Interface) -> None:
        """SIOCAIFADDR_IN6 with DAD off where the OS has the flag; a prefix route on P2P links."""
        flags = self.abi.in6_iff_nodad or 0
        req = wire.in6_aliasreq(self.abi, self.name, iface.ip, iface.network.prefixlen, None, flags)
        self.request(self.abi.af_inet6, self.abi.SIOCAIFADDR_IN6, req, f"adding {iface}")
        if self.point_to_point and iface.network.prefixlen < 128:
            self.add_route(iface.network)

    def remove_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        if address.version == 4:
            req = wire.ifreq(self.abi, self.name, wire.sockaddr_in(address))
            self.request(AF_INET, self.abi.SIOCDIFADDR, req, f"removing {address}")
        else:
            req = wire.in6_ifreq(self.abi, self.name, address)
            self.request(self.abi.af_inet6, self.abi.SIOCDIFADDR_IN6, req, f"removing {address}")
        for net in [r for r in self.routes if address in r]:
            self.delete_route(net)

    def addresses(self) -> list[IPInterface]:
        out: list[IPInterface] = []
        for entry in self.sys.getifaddrs():
            if entry.name != self.name or entry.address is None:
                continue
            if entry.family == AF_INET:
                mask = entry.netmask or "255.255.255.255"
                out.append(ipaddress.IPv4Interface(f"{entry.address}/{mask}"))
            elif entry.family == self.abi.af_inet6:
                prefix = ipaddress.IPv6Address(entry.netmask or "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
                plen = bin(int(prefix)).count("1")
                out.append(ipaddress.IPv6Interface(f"{entry.address}/{plen}"))  # link-local: %scope
        return out

    def broadcast(self) -> ipaddress.IPv4Address | None:
        for entry in self.sys.getifaddrs():
            if entry.name == self.name and entry.family == AF_INET and entry.address:
                if entry.destination:
                    return ipaddress.IPv4Address(entry.destination)
                mask = entry.netmask or "255.255.255.255"
                return ipaddress.IPv4Interface(f"{entry.address}/{mask}").network.broadcast_address
        return None

    def mac(self) -> str | None:
        for entry in self.sys.getifaddrs():
            if entry.name == self.name and entry.family == 18 and entry.address:
                return entry.address
        return None

    # ---- routes -------------------------------------------------------------------------------
    def _route(self, kind: int, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        fd = self.sys.socket(self.abi.af_route, socket.SOCK_RAW, 0)
        try:
            self._seq += 1
            msg = wire.route_message(
                self.abi, kind, net, self.sys.if_nametoindex(self.name), self._seq, self.sys.pid()
            )
            try:
                self.sys.write(fd, msg)
            except OSError as exc:
                if kind == RTM_ADD and exc.errno == errno.EEXIST:
                    return  # the kernel made it already
                if kind == RTM_DELETE and exc.errno in (errno.ESRCH, errno.ENOENT):
                    return
                what = f"{'adding' if kind == RTM_ADD else 'deleting'} the route to {net}"
                raise _fail(what, self.name, exc) from None
        finally:
            self.sys.close(fd)

    def add_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self._route(RTM_ADD, net)
        if net not in self.routes:
            self.routes.append(net)

    def delete_route(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self._route(RTM_DELETE, net)
        if net in self.routes:
            self.routes.remove(net)

    def delete_routes(self) -> list[str]:
        problems = []
        for net in list(self.routes):
            try:
                self.delete_route(net)
            except DeviceError as exc:
                problems.append(str(exc))
        return problems
