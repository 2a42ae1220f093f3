"""An adapter's IP configuration through iphlpapi, by LUID: addresses (IPv4 and several IPv6,
usable at once: DadState preferred, infinite lifetimes), MTU for both families, routes (the
ones tunlab added are removed on close), index and alias."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tunlab.devices._windows import abi as W
from tunlab.devices._windows.win32 import Win32, winerror_of
from tunlab.errors import DeviceError, DevicePermissionError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def set_sockaddr(target: W.SOCKADDR_INET, address: IPAddress) -> None:
    if address.version == 4:
        target.Ipv4.sin_family = W.AF_INET
        target.Ipv4.sin_addr[:] = list(address.packed)
    else:
        target.Ipv6.sin6_family = W.AF_INET6
        target.Ipv6.sin6_addr[:] = list(address.packed)


def sockaddr_ip(source: W.SOCKADDR_INET) -> IPAddress | None:
    if source.si_family == W.AF_INET:
        return ipaddress.IPv4Address(bytes(source.Ipv4.sin_addr))
    if source.si_family == W.AF_INET6:
        return ipaddress.IPv6Address(bytes(source.Ipv6.sin6_addr))
    return None


def _explain(exc: OSError, doing: str) -> DeviceError:
    code = winerror_of(exc)
    if code == W.ERROR_ACCESS_DENIED:
        return DevicePermissionError(f"{doing}: access denied: run as Administrator")
    if code in (W.ERROR_OBJECT_ALREADY_EXISTS, W.ERROR_ALREADY_EXISTS):
        return DeviceError(f"{doing}: it is already there (remove it first)")
    return DeviceError(f"{doing} failed: {exc.strerror or exc}")


@dataclass
class IpConfig:
    """What iphlpapi does for one adapter; routes it added are remembered for close()."""

    win: Win32
    luid: int
    routes: list[W.MIB_IPFORWARD_ROW2] = field(default_factory=list)

    def add_address(self, iface: IPInterface, destination: ipaddress.IPv4Address | None = None) -> None:
        row = self.win.new_unicast_row()
        set_sockaddr(row.Address, iface.ip)
        row.InterfaceLuid = self.luid
        row.OnLinkPrefixLength = iface.network.prefixlen
        row.DadState = W.IP_DAD_STATE_PREFERRED  # no duplicate-address wait: usable at once
        row.ValidLifetime = row.PreferredLifetime = W.INFINITE_LIFETIME
        try:
            self.win.create_unicast(row)
        except OSError as exc:
            raise _explain(exc, f"adding {iface}") from None
        if destination is not None:
            self.add_route(ipaddress.ip_network(f"{destination}/32"))

    def remove_address(self, address: IPAddress) -> None:
        family = W.AF_INET if address.version == 4 else W.AF_INET6
        for row in self.win.unicast_rows(family):
            if row.InterfaceLuid == self.luid and sockaddr_ip(row.Address) == address:
                try:
                    self.win.delete_unicast(row)
                except OSError as exc:
                    raise _explain(exc, f"removing {address}") from None
                return
        raise DeviceError(f"remove_address: {address} is not an address of this adapter")

    def addresses(self) -> list[IPInterface]:
        found: list[IPInterface] = []
        for family in (W.AF_INET, W.AF_INET6):
            for row in self.win.unicast_rows(family):
                ip = sockaddr_ip(row.Address)
                if row.InterfaceLuid == self.luid and ip is not None and not ip.is_link_local:
                    found.append(ipaddress.ip_interface(f"{ip}/{row.OnLinkPrefixLength}"))
        return found

    def mtu(self) -> int:
        return int(self.win.get_ip_interface(W.AF_INET, self.luid).NlMtu)

    def set_mtu(self, mtu: int) -> None:
        """NlMtu for IPv4 and IPv6 (IPv6 needs >= 1280: smaller MTUs set IPv4 only)."""
        for family, limit in ((W.AF_INET, 32), (W.AF_INET6, 128)):
            if family == W.AF_INET6 and mtu < 1280:
                continue
            try:
                row = self.win.get_ip_interface(family, self.luid)
            except OSError as exc:
                if winerror_of(exc) == W.ERROR_NOT_FOUND:  # this family is off on the adapter
                    continue
                raise _explain(exc, f"reading the MTU for family {family}") from None
            if row.SitePrefixLength > limit:  # Get can return what Set then refuses
                row.SitePrefixLength = 0 if family == W.AF_INET else 128
            row.NlMtu = mtu
            try:
                self.win.set_ip_interface(row)
            except OSError as exc:
                raise _explain(exc, f"setting MTU {mtu}") from None

    def add_route(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        row = self.win.new_route_row()
        row.InterfaceLuid = self.luid
        set_sockaddr(row.DestinationPrefix.Prefix, network.network_address)
        row.DestinationPrefix.PrefixLength = network.prefixlen
        unspecified: IPAddress = (
            ipaddress.IPv4Address(0) if network.version == 4 else ipaddress.IPv6Address(0)
        )
        set_sockaddr(row.NextHop, unspecified)  # no gateway: on-link
        row.Metric = 0
        row.Protocol = W.MIB_IPPROTO_NETMGMT
        try:
            self.win.create_route(row)
        except OSError as exc:
            raise _explain(exc, f"adding the route {network}") from None
        self.routes.append(row)

    def remove_routes(self) -> None:
        while self.routes:
            row = self.routes.pop()
            try:
                self.win.delete_route(row)
            except OSError as exc:
                if winerror_of(exc) != W.ERROR_NOT_FOUND:  # gone with the adapter
                    raise
