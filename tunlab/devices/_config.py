"""Parsing and validating device options before anything touches the kernel."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunlab.devices._capabilities import Capability
from tunlab.devices._layer import Layer
from tunlab.devices._options import LinuxOptions, WindowsOptions

if TYPE_CHECKING:
    from tunlab._linux.netns import NetNamespace

IFNAMSIZ = 16
MIN_MTU = 68
MAX_MTU = 65535


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class IPv4Setting:
    """One IPv4 address to put on a device; destination is the point-to-point peer."""

    interface: ipaddress.IPv4Interface
    destination: ipaddress.IPv4Address | None = None


@dataclass
class LinkSettings:
    """Interface settings applied in one step: at build, and by every later setter.

    None (or an empty list) leaves a setting alone; a backend applies all of them together
    (Linux: one netlink batch), in tun-rs's order: MTU, queue length, MAC, up, addresses, down.
    """

    mtu: int | None = None
    tx_queue_len: int | None = None
    mac: str | None = None
    ipv4: list[IPv4Setting] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    enabled: bool | None = None


@dataclass
class DeviceConfig:
    """Validated options, consumed once by a platform backend; None means 'leave the OS default'."""

    name: str | None = None
    layer: Layer = Layer.L3
    ipv4: list[IPv4Setting] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    mtu: int | None = None
    mac: str | None = None
    packet_information: bool = False
    enabled: bool | None = True
    tx_queue_len: int | None = None
    persist: bool = False
    linux: LinuxOptions = field(default_factory=LinuxOptions)
    windows: WindowsOptions = field(default_factory=WindowsOptions)

    def link_settings(self) -> LinkSettings:
        """What the backend applies to the interface right after creating it."""
        return LinkSettings(
            mtu=self.mtu,
            tx_queue_len=self.tx_queue_len,
            mac=self.mac,
            ipv4=list(self.ipv4),
            ipv6=list(self.ipv6),
            enabled=self.enabled,
        )


# bytes the kernel's dev_valid_name() refuses: '/', ':', NUL and what its isspace() calls space
# (its ctype table counts 0xA0, so a UTF-8 character containing that byte is refused too)
_BAD_NAME_BYTES = frozenset(b"/:\x00\t\n\v\f\r \xa0")


WINDOWS_NAME_MAX = 127  # Wintun: MAX_ADAPTER_NAME - 1 WCHARs


def check_name(name: object, option: str = "name", *, windows: bool = False) -> str:
    """An interface name the kernel will accept: 1-15 bytes, not . or .., no '/', ':' or space
    (Unix); on Windows an adapter name of 1-127 characters without control characters."""
    if not isinstance(name, str):
        raise TypeError(f"{option}: expected a str, got {type(name).__name__}")
    if windows:
        if not name or len(name) > WINDOWS_NAME_MAX:
            raise ValueError(
                f"{option}: adapter name {name!r} must have 1 to {WINDOWS_NAME_MAX} characters ({len(name)})"
            )
        if any(ord(c) < 0x20 for c in name):
            raise ValueError(f"{option}: adapter name {name!r} contains a control character")
        return name
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{option}: interface name {name!r} is not valid text") from None
    if not raw:
        raise ValueError(f"{option}: the interface name is empty")
    if len(raw) >= IFNAMSIZ:
        raise ValueError(
            f"{option}: interface name {name!r} is longer than {IFNAMSIZ - 1} bytes "
            f"({len(raw)}); pick a shorter name"
        )
    if name in (".", ".."):
        raise ValueError(f"{option}: {name!r} is not a usable interface name")
    bad = sorted({b for b in raw if b in _BAD_NAME_BYTES})
    if bad:
        shown = ", ".join(repr(chr(b)) if b < 0x80 else f"byte 0x{b:02x}" for b in bad)
        raise ValueError(
            f"{option}: interface name {name!r} contains {shown}: the kernel refuses '/', ':' "
            "and whitespace (in UTF-8 also any character containing byte 0xa0)"
        )
    return name


def check_mtu(mtu: object, option: str = "mtu") -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int):
        raise TypeError(f"{option}: expected an int, got {type(mtu).__name__}")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"{option}: {mtu} is outside {MIN_MTU}..{MAX_MTU}")
    return mtu


def check_uint(value: object, option: str, maximum: int = 2**32 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}: expected an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{option}: {value} is outside 0..{maximum}")
    return value


def check_bool(value: object, option: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{option}: expected True or False, got {value!r}")
    return value


def parse_ipv4(addr: object, option: str) -> ipaddress.IPv4Address:
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    if not isinstance(addr, str):
        raise TypeError(f"{option}: expected an IPv4 address string, got {type(addr).__name__}")
    try:
        return ipaddress.IPv4Address(addr)
    except ValueError:
        raise ValueError(f"{option}: {addr!r} is not an IPv4 address") from None


def parse_ipv6(addr: object, option: str) -> ipaddress.IPv6Address:
    if isinstance(addr, ipaddress.IPv6Address):
        return addr
    if not isinstance(addr, str):
        raise TypeError(f"{option}: expected an IPv6 address string, got {type(addr).__name__}")
    try:
        return ipaddress.IPv6Address(addr)
    except ValueError:
        raise ValueError(f"{option}: {addr!r} is not an IPv6 address") from None


def parse_prefix_v4(mask: object, option: str) -> int:
    """A prefix length from an int (0-32), a digit string, or a contiguous dotted netmask."""
    if isinstance(mask, bool):
        raise TypeError(f"{option}: expected a prefix length or netmask, got {mask!r}")
    if isinstance(mask, str) and mask.isdigit():
        mask = int(mask)
    if isinstance(mask, int):
        if not 0 <= mask <= 32:
            raise ValueError(f"{option}: prefix length {mask} is outside 0..32")
        return mask
    if isinstance(mask, (str, ipaddress.IPv4Address)):
        try:
            net = ipaddress.IPv4Network(f"0.0.0.0/{mask}")
        except ValueError:
            raise ValueError(
                f"{option}: {str(mask)!r} is not a contiguous netmask (like 255.255.255.0)"
            ) from None
        if str(net.netmask) != str(mask):
            raise ValueError(f"{option}: {str(mask)!r} is a host mask, not a netmask")
        return net.prefixlen
    raise TypeError(f"{option}: expected a prefix length or netmask, got {type(mask).__name__}")


def parse_prefix_v6(prefix: object, option: str) -> int:
    if isinstance(prefix, str) and prefix.isdigit():
        prefix = int(prefix)
    if isinstance(prefix, bool) or not isinstance(prefix, int):
        raise TypeError(f"{option}: expected a prefix length (0-128), got {prefix!r}")
    if not 0 <= prefix <= 128:
        raise ValueError(f"{option}: prefix length {prefix} is outside 0..128")
    return prefix


def parse_mac(mac: object, option: str = "mac_addr") -> str:
    """A unicast MAC as 'aa:bb:cc:dd:ee:ff' from a string or 6 bytes."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"{option}: a MAC address is 6 bytes, got {len(mac)}")
        raw = bytes(mac)
    elif isinstance(mac, str):
        if not _MAC_RE.match(mac):
            raise ValueError(f"{option}: {mac!r} is not a MAC address like 02:00:5e:00:53:01")
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    else:
        raise TypeError(f"{option}: expected a str or 6 bytes, got {type(mac).__name__}")
    if raw[0] & 1:
        raise ValueError(f"{option}: {format_mac(raw)} is a multicast address; use a unicast MAC")
    if raw == bytes(6):
        raise ValueError(f"{option}: 00:00:00:00:00:00 is not a usable MAC address")
    return format_mac(raw)


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_netns(value: object) -> str | NetNamespace:
    """A namespace name or path (opened once, at build), or an open NetNamespace (used as is)."""
    from tunlab._linux.netns import NetNamespace

    if isinstance(value, NetNamespace):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"netns: expected a namespace name, path or NetNamespace, got {type(value).__name__}")
    if not value or value in (".", ".."):
        raise ValueError(f"netns: {value!r} is not a namespace name or path")
    return value


def requirements(cfg: DeviceConfig) -> list[tuple[str, Capability]]:
    """(option as the user wrote it, capability it needs) for every option that was set."""
    need: list[tuple[str, Capability]] = []
    if cfg.layer is Layer.L2:
        need.append(("layer(Layer.L2)", Capability.TAP))
    if cfg.ipv4 or cfg.ipv6:
        need.append(("ipv4/ipv6", Capability.ADDRESSES))
    if cfg.mtu is not None:
        need.append(("mtu", Capability.MTU))
    if cfg.mac is not None:
        need.append(("mac_addr", Capability.MAC))
    if cfg.packet_information:
        need.append(("packet_information(True)", Capability.PACKET_INFORMATION))
    if cfg.enabled is not None:
        need.append(("enable", Capability.ENABLE))
    if cfg.tx_queue_len is not None:
        need.append(("tx_queue_len", Capability.TX_QUEUE_LEN))
    if cfg.persist:
        need.append(("persist(True)", Capability.PERSIST))
    lx = cfg.linux
    if lx.offload:
        need.append(("offload(True)", Capability.OFFLOAD))
    if lx.multi_queue:
        need.append(("multi_queue(True)", Capability.MULTI_QUEUE))
    if lx.owner is not None:
        need.append(("owner", Capability.OWNER))
    if lx.group is not None:
        need.append(("group", Capability.OWNER))
    if lx.netns is not None:
        need.append(("netns", Capability.NETNS))
    win = cfg.windows
    for option in [*win.wintun_options_set(), *(["driver"] if win.driver is not None else [])]:
        need.append((option, Capability.WINTUN))
    return need
