"""DeviceBuilder: collect and validate options, create the device, configure it, roll back."""

from __future__ import annotations

import ipaddress
import os
import uuid
from typing import TYPE_CHECKING

from tunlab.devices._backend import DeviceBackend
from tunlab.devices._config import (
    DeviceConfig,
    IPv4Setting,
    check_bool,
    check_mtu,
    check_name,
    check_uint,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
    parse_netns,
    parse_prefix_v4,
    parse_prefix_v6,
    requirements,
)
from tunlab.devices._layer import Layer
from tunlab.devices._platform import BackendType, backend_class, current_platform
from tunlab.devices._sync import SyncDevice
from tunlab.errors import UnsupportedOperationError

if TYPE_CHECKING:
    from typing_extensions import Self

    from tunlab._linux.netns import NetNamespace
    from tunlab.devices._aio import AsyncDevice


class DeviceBuilder:
    """Chainable device options; each setter validates at once and names the bad option.

    Nothing is created until build_sync() (or `await build_async()`), which rolls back
    whatever it made when a step fails.

    Example:
        ```python
        from tunlab import DeviceBuilder, Layer

        dev = (
            DeviceBuilder()
            .name("tun0")
            .ipv4("198.18.0.1", 24)
            .ipv6("2001:db8::1", 64)
            .mtu(1400)
            .netns("lab1")  # born inside that namespace; the fd stays here
            .build_sync()
        )
        tap = DeviceBuilder().layer(Layer.L2).mac_addr("02:00:5e:00:53:01").build_sync()
        ```
    """

    def __init__(self) -> None:
        self._config = DeviceConfig()
        self._backend: type[DeviceBackend] | str | None = None

    @property
    def config(self) -> DeviceConfig:
        """The validated options collected so far."""
        return self._config

    def name(self, name: str) -> Self:
        """The interface's name (on Windows the adapter's, which may hold spaces)."""
        self._config.name = check_name(name, windows=self._target_platform() == "win32")
        return self

    def _target_platform(self) -> str:
        """The platform the device will be made for: the chosen backend's, else this OS's."""
        if isinstance(self._backend, type):
            return self._backend.platform
        return self._backend or current_platform()

    def layer(self, layer: Layer) -> Self:
        """Layer.L3 for TUN (IP packets, the default) or Layer.L2 for TAP (Ethernet frames)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected Layer.L2 or Layer.L3, got {layer!r}")
        self._config.layer = layer
        return self

    def ipv4(
        self,
        address: str | ipaddress.IPv4Address,
        mask: int | str | ipaddress.IPv4Address,
        destination: str | ipaddress.IPv4Address | None = None,
    ) -> Self:
        """Add an IPv4 address; mask is a prefix length or a dotted netmask (repeatable)."""
        ip = parse_ipv4(address, "ipv4 address")
        prefix = parse_prefix_v4(mask, "ipv4 mask")
        dest = None if destination is None else parse_ipv4(destination, "ipv4 destination")
        iface = ipaddress.IPv4Interface(f"{ip}/{prefix}")
        if any(s.interface.ip == ip for s in self._config.ipv4):
            raise ValueError(f"ipv4: {ip} was given twice")
        self._config.ipv4.append(IPv4Setting(iface, dest))
        return self

    def ipv6(self, address: str | ipaddress.IPv6Address, prefix: int) -> Self:
        """Add an IPv6 address with its prefix length (repeatable)."""
        ip = parse_ipv6(address, "ipv6 address")
        plen = parse_prefix_v6(prefix, "ipv6 prefix")
        if any(i.ip == ip for i in self._config.ipv6):
            raise ValueError(f"ipv6: {ip} was given twice")
        self._config.ipv6.append(ipaddress.IPv6Interface(f"{ip}/{plen}"))
        return self

    def mtu(self, mtu: int) -> Self:
        """The MTU (68..65535)."""
        self._config.mtu = check_mtu(mtu)
        return self

    def mac_addr(self, mac: str | bytes) -> Self:
        """MAC address of a TAP (Layer.L2) device."""
        self._config.mac = parse_mac(mac)
        return self

    def packet_information(self, enable: bool) -> Self:
        """Keep the 4-byte packet-information header on every frame (default off)."""
        self._config.packet_information = check_bool(enable, "packet_information")
        return self

    def offload(self, enable: bool) -> Self:
        """virtio-net header with TSO/USO super-packets (Linux); False clears a stale mask."""
        self._config.linux.offload = check_bool(enable, "offload")
        return self

    def multi_queue(self, enable: bool) -> Self:
        """One interface with several queues (IFF_MULTI_QUEUE): try_clone() opens more."""
        self._config.linux.multi_queue = check_bool(enable, "multi_queue")
        return self

    def enable(self, up: bool = True) -> Self:
        """Bring the interface up (default) or leave it down after creation."""
        self._config.enabled = check_bool(up, "enable")
        return self

    def inherit_enable_state(self) -> Self:
        """Leave the up/down state alone (no privileged call: attach to a pre-made device)."""
        self._config.enabled = None
        return self

    def tx_queue_len(self, length: int) -> Self:
        """The interface's transmit queue length."""
        self._config.tx_queue_len = check_uint(length, "tx_queue_len")
        return self

    def persist(self, enable: bool = True) -> Self:
        """Keep the interface after the fd closes."""
        self._config.persist = check_bool(enable, "persist")
        return self

    def owner(self, uid: int) -> Self:
        """User allowed to attach to the (persistent) device without CAP_NET_ADMIN."""
        self._config.linux.owner = check_uint(uid, "owner", 2**31 - 1)
        return self

    def group(self, gid: int) -> Self:
        """Group that may attach to a persistent device without CAP_NET_ADMIN (TUNSETGROUP)."""
        self._config.linux.group = check_uint(gid, "group", 2**31 - 1)
        return self

    def netns(self, name_or_path: str | os.PathLike[str] | NetNamespace) -> Self:
        """Create the interface directly inside this network namespace (Linux); the fd stays here."""
        self._config.linux.netns = parse_netns(name_or_path)
        return self

    # ---- Windows (Wintun) ------------------------------------------------------------------
    def ring_capacity(self, capacity: int) -> Self:
        """Wintun's session ring in bytes: a power of two from 128 KiB to 64 MiB (default 4 MiB)."""
        from tunlab.devices._windows.abi import WINTUN_MAX_RING_CAPACITY as MAX
        from tunlab.devices._windows.abi import WINTUN_MIN_RING_CAPACITY as MIN

        value = check_uint(capacity, "ring_capacity", MAX)
        if value < MIN or value & (value - 1):
            raise ValueError(
                f"ring_capacity: {capacity!r} must be a power of two from {MIN} (128 KiB) "
                f"to {MAX} (64 MiB), e.g. {1 << max(17, min(26, value.bit_length()))}"
            )
        self._config.windows.ring_capacity = value
        return self

    def tunnel_type(self, tunnel_type: str) -> Self:
        """The Wintun adapter's tunnel type (Windows shows it as the adapter's description)."""
        if not isinstance(tunnel_type, str) or not 0 < len(tunnel_type) < 128:
            raise ValueError(f"tunnel_type: {tunnel_type!r} must be a string of 1 to 127 characters")
        self._config.windows.tunnel_type = tunnel_type
        return self

    def guid(self, guid: str | uuid.UUID) -> Self:
        """The Wintun adapter's GUID: the same GUID gets the same Windows network profile."""
        try:
            self._config.windows.guid = guid if isinstance(guid, uuid.UUID) else uuid.UUID(str(guid))
        except ValueError:
            raise ValueError(f"guid: {guid!r} is not a GUID (like '{{{uuid.uuid4()}}}')") from None
        return self

    def wintun_dll(self, path: str | os.PathLike[str]) -> Self:
        """Load wintun.dll from this path (else $TUNLAB_WINTUN_DLL, next to tunlab, the DLL path)."""
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValueError(f"wintun_dll: {path!r} is not a path to wintun.dll")
        self._config.windows.wintun_dll = path
        return self

    def windows_driver(self, driver: str) -> Self:
        """Windows TUN through 'wintun' (default) or 'tap-windows6' in its TUN mode (CONFIG_TUN,
        for machines that have OpenVPN's driver but not Wintun; it needs an IPv4 address)."""
        if driver not in ("wintun", "tap-windows6"):
            raise ValueError(f"windows_driver: {driver!r} is not 'wintun' or 'tap-windows6'")
        self._config.windows.driver = driver
        return self

    def backend(self, backend: str | type[DeviceBackend]) -> Self:
        """Which backend builds the device: this OS's by default; 'memory' for the in-memory one."""
        if isinstance(backend, str):
            backend_class(backend)  # an unknown name fails here, naming the known ones
        elif not (isinstance(backend, type) and issubclass(backend, DeviceBackend)):
            raise TypeError(f"backend: expected a platform name or a DeviceBackend class, got {backend!r}")
        self._backend = backend
        return self

    def _backend_class(self) -> BackendType:
        if isinstance(self._backend, type):
            found: BackendType = self._backend  # type: ignore[assignment]
            return found
        return backend_class(self._backend)

    def check(self) -> BackendType:
        """Everything that can be checked without creating anything; the backend to use."""
        cfg = self._config
        if cfg.mac is not None and cfg.layer is not Layer.L2:
            raise ValueError("mac_addr: only TAP devices have a MAC address; add .layer(Layer.L2)")
        cls = self._backend_class()
        if cfg.name is not None:  # the rules are the chosen backend's, not this OS's
            check_name(cfg.name, windows=cls.platform == "win32")
        caps = cls.capabilities_for(cfg.layer)
        missing = [(option, cap) for option, cap in requirements(cfg) if cap not in caps]
        if missing:
            what = "; ".join(f"{option} needs capability '{cap.value}'" for option, cap in missing)
            raise UnsupportedOperationError(
                f"{what}: not available for {cfg.layer.kind.upper()} devices on {cls.platform}; "
                "leave these options out on this platform"
            )
        return cls

    def build_sync(self) -> SyncDevice:
        """Create and configure the device; on any failure nothing is left behind."""
        cls = self.check()
        return SyncDevice(cls.create(self._config))

    async def build_async(self) -> AsyncDevice:
        """`await builder.build_async()`: build_sync() in a worker thread, as an AsyncDevice.

        Creation and netlink configuration take milliseconds; they never block the event loop.
        """
        from tunlab.devices._aio import AsyncDevice, run_in_thread

        return AsyncDevice(await run_in_thread(self.build_sync))
