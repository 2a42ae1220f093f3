"""The macOS, BSD and Windows backends against their real kernels (run by the macos, freebsd,
openbsd, netbsd and windows CI jobs as root/Administrator): create, addresses, MTU, ping
answered from Python, TAP round trip, a UDP socket's datagram, async, interrupt, rollback, and
nothing left behind.

These OSes have no network namespaces: the devices are made in the host's stack of a disposable
CI runner, with addresses from 198.18.0.0/15 and 2001:db8::/32 only, and removed by each test.
On Linux the same scenarios run inside namespaces in test_linux_*.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pytest_tunlab._environment import is_admin

from tests.support import skip_module_unless
from tunlab import DeviceBuilder, InterfaceExistsError, InterruptEvent, Layer, TunUnavailableError
from tunlab.devices._platform import backend_class, current_platform
from tunlab.devices._sync import SyncDevice
from tunlab.testing._packets import (
    ETH_P_ARP,
    ETH_P_IP,
    arp_reply,
    echo_reply,
    ethernet,
    parse_ethernet,
    parse_ip,
    parse_udp,
)
from tunlab.testing._traffic import ping_argv

NATIVE = ("darwin", "freebsd", "openbsd", "netbsd", "win32")
WINDOWS = current_platform() == "win32"
PLATFORM = current_platform()

skip_module_unless(
    PLATFORM in NATIVE,
    f"real-kernel tests of the {'/'.join(NATIVE)} backends; this is {PLATFORM} "
    "(Linux runs the same scenarios in namespaces: tests/devices/test_linux_*.py)",
)
skip_module_unless(
    is_admin(),
    "creating utun/feth/tun/tap/Wintun interfaces needs root (sudo -E) or Administrator",
)

TUN_LOCAL, TUN_PEER = "198.18.0.1", "198.18.0.2"
TUN6_LOCAL, TUN6_PEER = "2001:db8:70::1", "2001:db8:70::2"
TAP_LOCAL, TAP_PEER = "198.18.1.1", "198.18.1.2"
PEER_MAC = "02:00:5e:10:00:02"
DEADLINE = 10.0


def interfaces() -> set[str]:
    return {name for _index, name in socket.if_nameindex()}


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """Every test leaves the interface list exactly as it found it."""
    before = interfaces()
    yield
    for _ in range(50):  # some kernels detach a destroyed interface a moment later
        if interfaces() == before:
            break
        time.sleep(0.1)
    assert interfaces() == before, f"left behind: {interfaces() - before}"


def tun() -> SyncDevice:
    return DeviceBuilder().ipv4(TUN_LOCAL, 30, TUN_PEER).ipv6(TUN6_LOCAL, 64).mtu(1400).build_sync()


def tap() -> SyncDevice:
    try:
        return DeviceBuilder().layer(Layer.L2).ipv4(TAP_LOCAL, 24).mtu(1500).build_sync()
    except TunUnavailableError as exc:
        if not WINDOWS:
            raise
        pytest.skip(f"tap-windows6 cannot be used on this runner: {exc}")


def read_until(dev: SyncDevice, want: Callable[[bytes], bool], what: str) -> bytes:
    """Frames until one that `want`s (the OS sends its own: router solicitations, MLD, ...)."""
    seen = 0
    deadline = time.monotonic() + DEADLINE
    with InterruptEvent() as ev:
        buf = bytearray(dev.max_frame_size)
        while time.monotonic() < deadline:
            try:
                n = dev.recv_intr(buf, ev, timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            seen += 1
            frame = bytes(buf[:n])
            if want(frame):
                return frame
    raise AssertionError(f"no {what} from the device within {DEADLINE} s ({seen} other frames)")


def is_udp(port: int, payload: bytes) -> Callable[[bytes], bool]:
    def check(packet: bytes) -> bool:
        try:
            d = parse_udp(packet)
        except ValueError:
            return False
        return d.dport == port and d.payload == payload

    return check


# ---- TUN -----------------------------------------------------------------------------------
def test_tun_is_created_configured_and_listed() -> None:
    with tun() as dev:
        assert dev.name in interfaces()
        assert dev.platform == PLATFORM
        assert dev.layer is Layer.L3
        assert dev.mtu == 1400
        assert dev.is_running
        found = {str(a.ip): a.network.prefixlen for a in dev.addresses()}
        assert found.get(TUN_LOCAL) == 30, found
        assert found.get(TUN6_LOCAL) == 64, found
        dev.set_mtu(1280)
        assert dev.mtu == 1280
        dev.add_address_v6("2001:db8:71::1", 64)
        dev.remove_address(TUN6_LOCAL)
        listed = {str(a.ip) for a in dev.addresses()}
        assert "2001:db8:71::1" in listed and TUN6_LOCAL not in listed
        name = dev.name
    assert name not in interfaces()


def test_an_explicit_name_in_use_is_refused_and_nothing_changes() -> None:
    if WINDOWS:
        pytest.skip("what Wintun does with a second adapter of one name is not part of its API")
    with tun() as dev:
        with pytest.raises(InterfaceExistsError, match=dev.name):
            DeviceBuilder().name(dev.name).build_sync()


@pytest.mark.parametrize(("local", "peer"), [(TUN_LOCAL, TUN_PEER), (TUN6_LOCAL, TUN6_PEER)])
def test_ping_from_the_os_is_answered_from_python(local: str, peer: str) -> None:
    with tun() as dev:
        argv = ping_argv(peer, 1, 0.2, 5.0)  # spelled for this OS
        ping = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            request = read_until(dev, lambda p: echo_reply(p) is not None, f"echo request to {peer}")
            ip = parse_ip(request)
            assert (str(ip.src), str(ip.dst)) == (local, peer)
            reply = echo_reply(request)
            assert reply is not None
            assert dev.send(reply) == len(reply)
            out, _ = ping.communicate(timeout=DEADLINE)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait()
        assert ping.returncode == 0, out.decode(errors="replace")


@pytest.mark.parametrize(("family", "peer"), [(socket.AF_INET, TUN_PEER), (socket.AF_INET6, TUN6_PEER)])
def test_a_udp_sockets_datagram_is_read_from_the_device(family: int, peer: str) -> None:
    with tun() as dev, socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(b"tunlab-native", (peer, 40001))
        packet = read_until(dev, is_udp(40001, b"tunlab-native"), "UDP datagram")
        assert str(parse_ip(packet).dst) == peer


def test_a_packet_written_to_the_device_reaches_a_udp_socket() -> None:
    from tunlab.testing._packets import udp_packet

    with tun() as dev, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((TUN_LOCAL, 0))
        s.settimeout(DEADLINE)
        port = s.getsockname()[1]
        packet = udp_packet(
            ipaddress.ip_address(TUN_PEER), ipaddress.ip_address(TUN_LOCAL), 40002, port, b"in"
        )
        dev.send(packet)
        data, sender = s.recvfrom(100)
        assert (data, sender) == (b"in", (TUN_PEER, 40002))


def test_async_recv() -> None:
    async def main() -> bytes:
        async with await DeviceBuilder().ipv4(TUN_LOCAL, 30, TUN_PEER).build_async() as dev:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                want = is_udp(40003, b"async")
                asyncio.get_running_loop().call_later(0.1, s.sendto, b"async", (TUN_PEER, 40003))

                async def first() -> bytes:
                    while True:
                        packet = await dev.recv()
                        if want(packet):
                            return packet

                return await asyncio.wait_for(first(), DEADLINE)

    assert parse_udp(asyncio.run(main())).payload == b"async"


def test_interrupt_wakes_a_blocked_reader() -> None:
    with tun() as dev, InterruptEvent() as ev:
        caught: list[BaseException] = []

        def reader() -> None:
            try:
                while True:  # frames the OS sends on its own are read and ignored
                    dev.recv_intr(bytearray(dev.max_frame_size), ev)
            except BaseException as exc:
                caught.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()
        ev.trigger()
        t.join(5)
        assert not t.is_alive()
        assert isinstance(caught[0], InterruptedError)


def test_a_failed_build_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OS refusing the IPv6 address leaves no interface, route or fd behind."""
    if WINDOWS:
        from tunlab.devices._windows import abi as W
        from tunlab.devices._windows.backend import WindowsDevice
        from tunlab.devices._windows.win32 import Win32, win_error

        class Refusing(Win32):
            def create_unicast(self, row: W.MIB_UNICASTIPADDRESS_ROW) -> None:
                if row.Address.si_family == W.AF_INET6:
                    raise win_error("injected CreateUnicastIpAddressEntry", W.ERROR_INVALID_PARAMETER)
                super().create_unicast(row)

        monkeypatch.setattr(WindowsDevice, "win32", classmethod(lambda cls, dll=None: Refusing(dll)))
        with pytest.raises(OSError, match="injected"):
            tun()
        return
    cls = backend_class()
    real = cls.system  # type: ignore[attr-defined]

    def failing_system() -> object:
        sys_ = real()
        request = sys_.ioctl

        def ioctl(fd: int, req: int, arg: bytearray | int) -> bytearray | int:
            if req == cls.abi.SIOCAIFADDR_IN6:  # type: ignore[attr-defined]
                raise OSError(49, "injected: cannot assign requested address")
            return request(fd, req, arg)

        sys_.ioctl = ioctl
        return sys_

    monkeypatch.setattr(cls, "system", staticmethod(failing_system))
    fds = _open_fds()
    with pytest.raises(OSError, match="injected"):
        tun()
    assert _open_fds() == fds


def _open_fds() -> set[str]:
    return set(os.listdir("/dev/fd"))  # the listing's own fd takes the same lowest free slot


# ---- TAP -----------------------------------------------------------------------------------
def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    from tunlab.testing._packets import mac_bytes

    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
    body += mac_bytes(sender_mac) + socket.inet_aton(sender_ip)
    body += b"\0" * 6 + socket.inet_aton(target_ip)
    return ethernet("ff:ff:ff:ff:ff:ff", sender_mac, ETH_P_ARP, body)


def test_tap_has_a_mac_and_answers_arp_written_to_it() -> None:
    with tap() as dev:
        assert dev.layer is Layer.L2
        mac = dev.mac_address
        assert len(mac.split(":")) == 6 and mac != "00:00:00:00:00:00"
        dev.send(arp_request(PEER_MAC, TAP_PEER, TAP_LOCAL))

        def is_reply(frame: bytes) -> bool:
            try:
                dst, _src, etype, body = parse_ethernet(frame)
            except ValueError:
                return False
            return etype == ETH_P_ARP and body[6:8] == b"\0\2" and body[24:28] == socket.inet_aton(TAP_PEER)

        reply = read_until(dev, is_reply, f"ARP reply for {TAP_PEER}")
        dst, src, _etype, body = parse_ethernet(reply)
        assert dst.hex(":") == PEER_MAC
        assert body[8:14] == src and body[14:18] == socket.inet_aton(TAP_LOCAL)


def test_tap_carries_a_udp_datagram_after_arp_answered_from_python() -> None:
    with tap() as dev, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"over-tap", (TAP_PEER, 40004))
        request = read_until(
            dev, lambda f: arp_reply(f, PEER_MAC, ipaddress.IPv4Address(TAP_PEER)) is not None, "ARP request"
        )
        answer = arp_reply(request, PEER_MAC, ipaddress.IPv4Address(TAP_PEER))
        assert answer is not None
        dev.send(answer)

        def udp_frame(frame: bytes) -> bool:
            try:
                dst, _src, etype, body = parse_ethernet(frame)
            except ValueError:
                return False
            return etype == ETH_P_IP and dst.hex(":") == PEER_MAC and is_udp(40004, b"over-tap")(body)

        read_until(dev, udp_frame, "UDP frame to the answered MAC")


def test_tap_mac_can_be_set() -> None:
    with tap() as dev:
        dev.set_mac_address("02:00:5e:10:00:99")
        assert dev.mac_address == "02:00:5e:10:00:99"
