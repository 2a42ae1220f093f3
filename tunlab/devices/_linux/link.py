"""Configuration of a Linux interface over one netlink session: settings in one batch, reads.

Every error the kernel returns is turned into a typed DeviceError that names the operation,
the interface and what to do; nothing is only logged.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable
from typing import Any

from tunlab._linux.netlink import Address, Failure, NetlinkSession
from tunlab.devices._config import LinkSettings
from tunlab.devices._layer import Layer
from tunlab.errors import DeviceError, DevicePermissionError, InterfaceExistsError, InterfaceNotFoundError

IFF_UP = 0x1
IFF_RUNNING = 0x40


def error(operation: str, code: int, name: str) -> DeviceError:
    """A typed error for a refused netlink request."""
    if code == errno.EPERM:
        return DevicePermissionError(f"{operation} on '{name}' needs CAP_NET_ADMIN: run as root")
    if code == errno.ENODEV:
        return InterfaceNotFoundError(f"{operation}: interface '{name}' no longer exists")
    return DeviceError(f"{operation} on '{name}' failed: {os.strerror(code)}", code)


class Link:
    """One interface (by index) in the namespace its session lives in."""

    def __init__(self, session: NetlinkSession, index: int, name: str, layer: Layer) -> None:
        self.session = session
        self.index = index
        self.name = name
        self.layer = layer

    # ---- reads ------------------------------------------------------------------------------
    def message(self) -> Any:
        try:
            return self.session.link(index=self.index)
        except OSError as exc:
            raise error("reading the link", exc.errno or errno.EIO, self.name) from None

    def attr(self, name: str) -> Any:
        return self.message().get_attr(name)

    def flags(self) -> int:
        return int(self.message()["flags"])

    def addresses(self) -> list[Address]:
        try:
            return self.session.addresses(self.index)
        except OSError as exc:
            raise error("listing addresses", exc.errno or errno.EIO, self.name) from None

    # ---- writes -----------------------------------------------------------------------------
    def apply(self, settings: LinkSettings) -> None:
        """MTU, queue length, MAC, up, addresses, then down: one batch, each refusal explained."""
        s = self.session
        explain: dict[str, Callable[[int], DeviceError]] = {}
        if settings.mtu is not None or settings.tx_queue_len is not None or settings.mac is not None:
            label = "setting " + ", ".join(
                part
                for part in (
                    f"MTU {settings.mtu}" if settings.mtu is not None else "",
                    f"txqueuelen {settings.tx_queue_len}" if settings.tx_queue_len is not None else "",
                    f"MAC {settings.mac}" if settings.mac is not None else "",
                )
                if part
            )
            s.set_link(self.index, label, mtu=settings.mtu, txqlen=settings.tx_queue_len, mac=settings.mac)
        # up before addresses: an IPv6 address added to a running link joins its solicited-node
        # group at once, so the first neighbour solicitation is answered
        if settings.enabled:
            s.set_link(self.index, "bringing the link up", up=True)
        for v4 in settings.ipv4:
            label = f"adding address {v4.interface}"
            broadcast = v4.destination is None and self.layer is Layer.L2
            s.add_address(self.index, v4.interface, label, broadcast=broadcast, peer=v4.destination)
            explain[label] = self._address_error(str(v4.interface))
        for v6 in settings.ipv6:
            label = f"adding address {v6}"
            s.add_address(self.index, v6, label)
            explain[label] = self._address_error(str(v6))
        if settings.enabled is False:
            s.set_link(self.index, "bringing the link down", up=False)
        self._raise_first(s.send(), explain)

    def _raise_first(self, failures: list[Failure], explain: dict[str, Callable[[int], DeviceError]]) -> None:
        if not failures:
            return
        first = failures[0]
        maker = explain.get(first.label)
        if maker is not None:
            raise maker(first.code)
        raise error(first.label, first.code, self.name)

    def _address_error(self, label: str) -> Callable[[int], DeviceError]:
        def make(code: int) -> DeviceError:
            if code == errno.EEXIST:
                return DeviceError(f"address {label} is already on '{self.name}'", errno.EEXIST)
            if code in (errno.EACCES, errno.EINVAL) and ":" in label:
                mtu = self.attr("IFLA_MTU")
                if mtu is not None and mtu < 1280:
                    why = f"IPv6 is disabled on it: it needs MTU >= 1280 (MTU is {mtu})"
                elif code == errno.EACCES:
                    why = "IPv6 is disabled on it (net.ipv6.conf.*.disable_ipv6=1)"
                else:
                    why = os.strerror(code)
                return DeviceError(f"adding address {label} on '{self.name}' failed: {why}", code)
            return error(f"adding address {label}", code, self.name)

        return make

    def rename(self, new: str) -> None:
        """Rename, keeping the up/down state (the kernel renames only links that are down)."""
        up = bool(self.flags() & IFF_UP)
        s = self.session
        if up:
            s.set_link(self.index, "bringing the link down to rename it", up=False)
        s.set_link(self.index, f"renaming to '{new}'", name=new)
        if up:
            s.set_link(self.index, "bringing the link up again", up=True)
        failures = s.send()
        renamed = not any(f.label.startswith("renaming") for f in failures)
        if renamed:
            self.name = new
        for f in failures:
            if f.label.startswith("renaming") and f.code == errno.EEXIST:
                raise InterfaceExistsError(
                    f"set_name: an interface named '{new}' already exists in the namespace of '{self.name}'"
                )
        self._raise_first(failures, {})

    def remove_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        matches = [a for a in self.addresses() if a.interface.ip == address]
        if not matches:
            raise DeviceError(f"remove_address: {address} is not on '{self.name}'", errno.EADDRNOTAVAIL)
        self.session.delete_address(self.index, matches[0], f"removing address {address}")
        self._raise_first(self.session.send(), {})

    def ipv4(self) -> list[Address]:
        """IPv4 addresses ordered by address, so 'the first' does not depend on kernel order."""
        return sorted((a for a in self.addresses() if a.interface.version == 4), key=lambda a: a.interface.ip)

    def set_broadcast(self, address: ipaddress.IPv4Address) -> None:
        """Set the broadcast of the IPv4 address whose subnet holds it (else the first one)."""
        v4 = self.ipv4()
        if not v4:
            raise DeviceError(
                f"set_broadcast: '{self.name}' has no IPv4 address to set a broadcast for",
                errno.EADDRNOTAVAIL,
            )
        entry = next((a for a in v4 if address in a.interface.network), v4[0])
        label = f"setting broadcast {address} on {entry.interface}"
        # the kernel ignores IFA_BROADCAST on NLM_F_REPLACE: re-create the address
        self.session.delete_address(self.index, entry, label)
        self.session.add_address(self.index, entry.interface, label, broadcast=address, peer=entry.peer)
        self._raise_first(self.session.send(), {})
