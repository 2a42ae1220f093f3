"""The device contract: every public method either works or raises UnsupportedOperationError
naming the capability it needs, on every backend and layer (psutil's test_contracts idea).

The table below is the contract; a backend that answers a method it does not claim, or claims
one it cannot do, fails here. Linux runs against the real kernel (root); the in-memory
backend runs everywhere; macOS and the BSDs run against the syscall-level double, Windows
against the Win32 double.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import HAS_TUN, IS_ROOT, unique_name
from tunlab import DeviceBuilder, InterruptEvent, Layer, SyncDevice
from tunlab.devices import Capability
from tunlab.devices._platform import backend_class
from tunlab.errors import UnsupportedOperationError

Call = Callable[[SyncDevice], Any]

# method -> (capability it needs or None for every device, how to call it)
CONTRACT: dict[str, tuple[Capability | None, Call]] = {
    "name": (None, lambda d: d.name),
    "layer": (None, lambda d: d.layer),
    "capabilities": (None, lambda d: d.capabilities),
    "platform": (None, lambda d: d.platform),
    "closed": (None, lambda d: d.closed),
    "max_frame_size": (None, lambda d: d.max_frame_size),
    "readiness": (None, lambda d: d.readiness()),
    "backend": (None, lambda d: d.backend),
    "receiver": (None, lambda d: d.receiver.pending),
    "set_nonblocking": (None, lambda d: d.set_nonblocking(True)),
    "is_nonblocking": (None, lambda d: d.is_nonblocking),
    "send": (None, lambda d: d.send(b"\x45" + bytes(27))),
    "recv": (None, lambda d: _nothing_to_read(d.recv)),
    "recv_into": (None, lambda d: _nothing_to_read(lambda: d.recv_into(bytearray(2048)))),
    "recv_multiple": (None, lambda d: _nothing_to_read(lambda: d.recv_multiple([bytearray(2048)], [0]))),
    "send_multiple": (None, lambda d: d.send_multiple(None, [b"\x45" + bytes(27)], 0)),
    "wait_readable_intr": (None, lambda d: _timeout(lambda e: d.wait_readable_intr(e, timeout=0))),
    "wait_writable_intr": (None, lambda d: d.wait_writable_intr(InterruptEvent(), timeout=1)),
    "recv_intr": (None, lambda d: _timeout(lambda e: d.recv_intr(bytearray(2048), e, timeout=0))),
    "send_intr": (None, lambda d: d.send_intr(b"\x45" + bytes(27), InterruptEvent(), timeout=1)),
    "tcp_gso": (None, lambda d: d.tcp_gso),
    "udp_gso": (None, lambda d: d.udp_gso),
    "packet_information": (None, lambda d: d.packet_information),
    "multi_queue": (None, lambda d: d.multi_queue),
    "is_persistent": (None, lambda d: d.is_persistent),
    "set_name": (Capability.SET_NAME, lambda d: d.set_name(unique_name("c")[-15:])),
    "if_index": (Capability.IF_INDEX, lambda d: d.if_index),
    "mtu": (Capability.MTU, lambda d: d.mtu),
    "set_mtu": (Capability.MTU, lambda d: d.set_mtu(1400)),
    "addresses": (Capability.ADDRESSES, lambda d: d.addresses()),
    "add_address_v4": (Capability.ADDRESSES, lambda d: d.add_address_v4("198.18.77.1", 24)),
    "add_address_v6": (Capability.ADDRESSES, lambda d: d.add_address_v6("2001:db8:77::1", 64)),
    "set_network_address": (Capability.ADDRESSES, lambda d: d.set_network_address("198.18.78.1", 24)),
    "remove_address": (
        Capability.ADDRESSES,
        lambda d: (d.add_address_v6("2001:db8:79::1", 64), d.remove_address("2001:db8:79::1")),
    ),
    "enabled": (Capability.ENABLE, lambda d: d.enabled(True)),
    "is_running": (Capability.ENABLE, lambda d: d.is_running),
    "mac_address": (Capability.MAC, lambda d: d.mac_address),
    "set_mac_address": (Capability.MAC, lambda d: d.set_mac_address("02:00:5e:00:53:77")),
    "broadcast": (Capability.BROADCAST, lambda d: d.broadcast),
    "set_broadcast": (
        Capability.BROADCAST,
        lambda d: (d.add_address_v4("198.18.78.1", 24), d.set_broadcast("198.18.78.254")),
    ),
    "tx_queue_len": (Capability.TX_QUEUE_LEN, lambda d: d.tx_queue_len),
    "set_tx_queue_len": (Capability.TX_QUEUE_LEN, lambda d: d.set_tx_queue_len(500)),
    "persist": (Capability.PERSIST, lambda d: d.persist(False)),
    "set_owner": (Capability.OWNER, lambda d: d.set_owner(0)),
    "set_group": (Capability.OWNER, lambda d: d.set_group(0)),
    "netns": (Capability.NETNS, lambda d: d.netns().close()),
    "try_clone": (Capability.MULTI_QUEUE, lambda d: _closing(d.try_clone())),
    "attach_queue": (Capability.MULTI_QUEUE, lambda d: (d.attach_queue(False), d.attach_queue(True))),
    "fileno": (Capability.FD, lambda d: d.fileno()),
    "recv_vectored": (
        Capability.VECTORED,
        lambda d: _nothing_to_read(lambda: d.recv_vectored([bytearray(2048)])),
    ),
    "send_vectored": (Capability.VECTORED, lambda d: d.send_vectored([b"\x45", bytes(27)])),
}
# methods checked elsewhere (they end the device or need a second process)
ELSEWHERE = {"close", "into_fd", "from_fd", "borrow_raw", "recv_vectored_intr", "send_vectored_intr"}


def _nothing_to_read(call: Callable[[], Any]) -> None:
    with contextlib.suppress(BlockingIOError):
        call()


def _timeout(call: Callable[[InterruptEvent], Any]) -> None:
    with InterruptEvent() as event, contextlib.suppress(TimeoutError):
        call(event)


def _closing(dev: SyncDevice) -> None:
    dev.close()


def test_the_contract_covers_every_public_method() -> None:
    public = {n for n, _ in inspect.getmembers(SyncDevice) if not n.startswith("_")}
    assert public - set(CONTRACT) - ELSEWHERE == set(), "a public method has no contract entry"


# macOS and the BSDs run through the syscall-level double here (for real in their CI jobs)
# (the syscall double hands out POSIX socketpair fds, so those rows need a POSIX host)
DOUBLED = ["darwin", "freebsd", "openbsd", "netbsd"] if os.name == "posix" else []
BACKENDS = ["memory", *DOUBLED, "win32"]
if IS_ROOT and HAS_TUN:
    BACKENDS.append("linux")


@contextlib.contextmanager
def device(backend: str, layer: Layer) -> Iterator[SyncDevice]:
    builder = DeviceBuilder().backend(backend).layer(layer)
    if backend in DOUBLED:
        from tests.devices.bsd_double import RecordingSystem

        cls = backend_class(backend)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cls, "system", classmethod(lambda c: RecordingSystem(c.abi)))
            with builder.build_sync() as dev:
                yield dev
        return
    if backend == "win32":
        import uuid

        from tests.devices.windows_double import FakeWin32, FakeWindows
        from tunlab.devices._windows.backend import WindowsDevice

        win = FakeWin32(FakeWindows(taps=[(uuid.uuid4(), "root\\tap0901")]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(WindowsDevice, "win32", classmethod(lambda c, dll=None: win))
            with builder.build_sync() as dev:
                yield dev
        return
    if backend != "linux":
        with builder.build_sync() as dev:
            yield dev
        return
    from tunlab._linux.netns import NetNamespace

    ns = NetNamespace.create(unique_name())
    try:
        ns.write_sysctl("net.ipv6.conf.default.disable_ipv6", 0)
        with builder.netns(ns).multi_queue(True).build_sync() as dev:
            yield dev
    finally:
        ns.delete()


@pytest.mark.parametrize("layer", [Layer.L3, Layer.L2], ids=["tun", "tap"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", sorted(CONTRACT))
def test_method_works_or_names_the_missing_capability(backend: str, layer: Layer, method: str) -> None:
    capability, call = CONTRACT[method]
    with device(backend, layer) as dev:
        dev.set_nonblocking(True)
        assert dev.capabilities == backend_class(backend).capabilities_for(layer)
        if capability is None or capability in dev.capabilities:
            try:
                call(dev)
            except UnsupportedOperationError as exc:  # pragma: no cover - the failure report
                pytest.fail(f"{backend} {layer.kind} claims {capability} but {method} says: {exc}")
        else:
            with pytest.raises(UnsupportedOperationError) as info:
                call(dev)
            assert f"capability '{capability.value}'" in str(info.value)
            assert backend in str(info.value)
