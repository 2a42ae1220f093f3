"""The Windows backend (Wintun TUN, tap-windows6 TAP) driven through the Win32 double on any
OS: the calls and buffers of create -> configure -> I/O -> close, the ring and its errors,
waits on event handles with interrupts, async, and the rollback after a failure at each step.
The layouts are checked against the mingw-w64 headers in tests/abi/test_windows_headers.py."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import ipaddress
import logging
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.devices.windows_double import FakeWin32, FakeWindows, format_error
from tunlab import Capability, DeviceBuilder, InterruptEvent, Layer, SyncDevice
from tunlab.devices._aio import AsyncDevice
from tunlab.devices._config import DeviceConfig, IPv4Setting
from tunlab.devices._windows import abi as W
from tunlab.devices._windows.backend import WindowsDevice
from tunlab.devices._windows.ipconfig import sockaddr_ip
from tunlab.devices._windows.tap import TapWindowsDevice
from tunlab.devices._windows.wintun import DEFAULT_RING, WintunDevice
from tunlab.errors import (
    DeviceClosedError,
    DevicePermissionError,
    InterfaceExistsError,
    RingFullError,
    TunUnavailableError,
    UnsupportedOperationError,
)


@pytest.fixture(autouse=True)
def windows_format_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """ctypes.FormatError as Windows' CPython has it (a signed int argument): where ctypes has
    none (off Windows), the double's; on Windows the real one runs."""
    if not hasattr(ctypes, "FormatError"):
        monkeypatch.setattr(ctypes, "FormatError", format_error, raising=False)


PACKET = bytes.fromhex("4500001c0000400040110000c6120002c61200010fa00fa00008") + b"hi"
V4 = ipaddress.IPv4Interface("198.18.0.1/24")
V6 = ipaddress.IPv6Interface("2001:db8::1/64")
TAP_GUID = uuid.UUID("8f3b2c1e-0d4a-4b5c-9e6f-102132435465")


def config(layer: Layer = Layer.L3, **kw: object) -> DeviceConfig:
    cfg = DeviceConfig(layer=layer, name="tl0" if layer is Layer.L3 else None, mtu=1400,
                       ipv4=[IPv4Setting(V4, ipaddress.IPv4Address("198.18.0.2"))], ipv6=[V6])  # fmt: skip
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def wintun(win: FakeWin32 | None = None, **kw: object) -> tuple[FakeWin32, WintunDevice]:
    win = win or FakeWin32()
    return win, WintunDevice.create(config(**kw), win)


def session(win: FakeWin32) -> int:
    (s,) = win.sessions
    return s


# ---- create and configure ---------------------------------------------------------------------------
def test_wintun_create_is_these_calls_in_this_order() -> None:
    win, dev = wintun()
    names = win.names()
    assert names[:5] == [
        "WintunSetLogger",
        "WintunOpenAdapter",  # an adapter of that name would be used as it is
        "WintunCreateAdapter",
        "WintunStartSession",
        "WintunGetAdapterLUID",
    ]
    assert win.calls[2].args == ("tl0", "tunlab", None)
    assert win.calls[3].args[1] == DEFAULT_RING == 0x400000
    # MTU for both families: the SitePrefixLength Get returns (64 > 32) is clamped for IPv4
    sets = [c.args for c in win.calls if c.name == "SetIpInterfaceEntry"]
    assert sets == [(W.AF_INET, 1400, 0), (W.AF_INET6, 1400, 64)]
    assert dev.config.mtu() == 1400
    # addresses: preferred (no DAD wait), infinite lifetimes, on this LUID, with their prefix
    rows = win.m.unicast
    assert [(str(sockaddr_ip(r.Address)), r.OnLinkPrefixLength) for r in rows] == [
        ("198.18.0.1", 24),
        ("2001:db8::1", 64),
    ]
    luid = win.m.adapters["tl0"]
    for r in rows:
        assert (r.InterfaceLuid, r.DadState) == (luid, W.IP_DAD_STATE_PREFERRED)
        assert r.ValidLifetime == r.PreferredLifetime == W.INFINITE_LIFETIME
    # the IPv4 destination gets an on-link host route
    [route] = win.m.routes
    assert (str(sockaddr_ip(route.DestinationPrefix.Prefix)), route.DestinationPrefix.PrefixLength) == (
        "198.18.0.2",
        32,
    )
    assert str(sockaddr_ip(route.NextHop)) == "0.0.0.0" and route.Protocol == W.MIB_IPPROTO_NETMGMT
    assert {str(a) for a in dev.config.addresses()} == {"198.18.0.1/24", "2001:db8::1/64"}
    assert dev.config.if_index() == 1 and dev.config.name() == "tl0" and dev.config.is_running()
    dev.close()


def test_wintun_options_reach_the_dll() -> None:
    guid = uuid.uuid4()
    win, dev = wintun()
    dev.close()
    builder = DeviceBuilder().ring_capacity(1 << 20).tunnel_type("MyVPN").guid(str(guid))
    builder.wintun_dll("C:/x/wintun.dll")
    win = FakeWin32()
    dev = WintunDevice.create(builder.config, win)
    assert win.calls[1].args[1:] == ("MyVPN", guid)  # no name: nothing to open first
    assert win.calls[2].args[1] == 1 << 20
    dev.close()


@pytest.mark.parametrize("bad", [1000, 1 << 16, 3 << 17, 1 << 27, -1, "big"])
def test_a_ring_capacity_that_wintun_refuses_is_refused_first(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="ring_capacity"):
        DeviceBuilder().ring_capacity(bad)  # type: ignore[arg-type]


def test_wintun_options_elsewhere_name_the_platform() -> None:
    with pytest.raises(UnsupportedOperationError, match="ring_capacity needs capability 'wintun'.*memory"):
        DeviceBuilder().backend("memory").ring_capacity(1 << 20).check()
    with pytest.raises(ValueError, match="guid: 'nope'"):
        DeviceBuilder().guid("nope")


# ---- errors when creating ------------------------------------------------------------------------------
def test_a_missing_dll_says_where_to_get_it() -> None:
    with pytest.raises(TunUnavailableError, match=r"wintun\.net"):
        WintunDevice.create(config(), FakeWin32(FakeWindows(no_dll=True)))


def test_the_real_loader_names_every_place_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunlab.devices._windows import win32

    monkeypatch.setenv("TUNLAB_WINTUN_DLL", "D:/from-env/wintun.dll")
    places = win32.wintun_candidates("E:/given/wintun.dll")
    assert places[:2] == ["E:/given/wintun.dll", "D:/from-env/wintun.dll"]
    assert places[-1] == "wintun.dll" and Path(places[2]).parts[-2:] == ("_windows", "wintun.dll")
    with pytest.raises(FileNotFoundError, match=r"TUNLAB_WINTUN_DLL.*wintun_dll\(path\)") as info:
        _ = win32.Win32("E:/given/wintun.dll").wt
    text = str(info.value)
    assert "E:/given/wintun.dll" in text and "D:/from-env/wintun.dll" in text
    # ctypes (3.8+) searches the interpreter's folder, not the script's: the message says so
    assert "next to your program" not in text and str(Path(sys.executable).parent) in text
    assert "not searched by ctypes" in text


@pytest.mark.parametrize(
    ("code", "error"),
    [(W.ERROR_ACCESS_DENIED, DevicePermissionError), (W.ERROR_ALREADY_EXISTS, InterfaceExistsError)],
)
def test_creation_errors_are_typed(code: int, error: type[Exception]) -> None:
    win = FakeWin32()
    win.fail("WintunCreateAdapter", code)
    with pytest.raises(error, match="tl0"):
        WintunDevice.create(config(), win)
    assert not win.open_adapters


STEPS = ["WintunStartSession", "SetIpInterfaceEntry", "CreateUnicastIpAddressEntry", "CreateIpForwardEntry2"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_removes_the_adapter_and_every_handle(step: str) -> None:
    win = FakeWin32()
    win.fail(step, W.ERROR_INVALID_PARAMETER, after=1 if step == "CreateUnicastIpAddressEntry" else 0)
    with pytest.raises(OSError, match="failed|Invalid|invalid|error 87"):
        WintunDevice.create(config(), win)
    assert not win.open_adapters and not win.m.adapters, "the adapter was left behind"
    assert not win.sessions and not win.open_handles(), "a session or handle was left open"
    assert not win.m.unicast and not win.m.routes


# ---- frames --------------------------------------------------------------------------------------------
def test_recv_copies_out_of_the_ring_and_releases_the_packet() -> None:
    win, dev = wintun()
    s = session(win)
    win.deliver(s, PACKET)
    win.deliver(s, PACKET[::-1])
    buf = bytearray(2048)
    assert dev.recv_into(buf) == len(PACKET) and bytes(buf[: len(PACKET)]) == PACKET
    short = bytearray(4)
    assert dev.recv_into(short) == 4 and bytes(short) == PACKET[::-1][:4]  # a short buffer truncates
    assert len(win.released) == 2 and not win._memory, "a ring packet was not released"
    dev.nonblocking = True
    with pytest.raises(BlockingIOError):
        dev.recv_into(buf)
    dev.close()


def test_send_allocates_copies_and_sends() -> None:
    win, dev = wintun()
    assert dev.send(memoryview(PACKET)) == len(PACKET)
    assert win.m.sent == [PACKET]
    assert [c.name for c in win.calls[-2:]] == ["WintunAllocateSendPacket", "WintunSendPacket"]
    win.m.ring_free = 10
    with pytest.raises(RingFullError, match="ring_capacity"):
        dev.send(PACKET)
    with pytest.raises(ValueError, match="65535"):
        dev.send(bytes(70000))
    win.m.terminating = True
    with pytest.raises(DeviceClosedError, match="terminating"):
        dev.send(PACKET)
    with pytest.raises(DeviceClosedError, match="terminating"):
        dev.recv_into(bytearray(100))
    dev.close()


def test_a_blocking_read_waits_on_the_read_event_until_a_packet_comes() -> None:
    win, dev = wintun()
    s = session(win)
    threading.Timer(0.2, win.deliver, (s, PACKET)).start()
    start = time.monotonic()
    sync = SyncDevice(dev)
    assert sync.recv() == PACKET
    assert time.monotonic() - start >= 0.15
    waits = [c.args for c in win.calls if c.name == "WaitForMultipleObjects"]
    assert waits and waits[0][0][0] == win.read_events[s]  # the ring's event first, then close
    sync.close()


def test_interrupts_and_timeouts_wait_on_handles() -> None:
    win, dev = wintun()
    sync = SyncDevice(dev)
    with InterruptEvent() as ev:
        with pytest.raises(TimeoutError):
            sync.recv_intr(bytearray(100), ev, timeout=0.1)
        threading.Timer(0.2, ev.trigger).start()
        with pytest.raises(InterruptedError):
            sync.recv_intr(bytearray(100), ev)
        ev.reset()
        win.deliver(session(win), PACKET)
        ev.trigger()  # a packet already there wins over a triggered event
        assert sync.recv_intr(bytearray(100), ev) == len(PACKET)
    sync.close()


def test_close_wakes_a_blocked_reader_and_removes_everything() -> None:
    win, dev = wintun()
    caught: list[BaseException] = []

    def reader() -> None:
        try:
            dev.recv_into(bytearray(100))
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    dev.close()
    t.join(5)
    assert not t.is_alive() and isinstance(caught[0], DeviceClosedError)
    assert not win.m.adapters and not win.sessions and not win.open_handles()
    names = win.names()
    assert (
        names.index("DeleteIpForwardEntry2")
        < names.index("WintunEndSession")
        < names.index("WintunCloseAdapter")
    )
    dev.close()  # twice is fine


def test_async_recv_waits_in_a_thread_on_the_event() -> None:
    win, dev = wintun()

    async def main() -> bytes:
        adev = AsyncDevice(SyncDevice(dev))
        asyncio.get_running_loop().call_later(0.1, win.deliver, session(win), PACKET)
        try:
            return await asyncio.wait_for(adev.recv(), 5)
        finally:
            await adev.aclose()

    assert asyncio.run(main()) == PACKET


def test_down_ends_the_session_and_up_starts_a_new_one() -> None:
    win, dev = wintun()
    sync = SyncDevice(dev)
    sync.enabled(False)
    assert not sync.is_running and not win.sessions
    with pytest.raises(OSError, match="down"):
        sync.send(PACKET)
    sync.enabled(True)
    assert sync.is_running and len(win.sessions) == 1
    sync.close()


def test_wintun_log_lines_go_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    win, dev = wintun()
    with caplog.at_level(logging.INFO, logger="tunlab.wintun"):
        win.logger(W.WINTUN_LOG_ERR, 0, "Failed to set up adapter")
    assert ("tunlab.wintun", logging.ERROR, "Failed to set up adapter") in caplog.record_tuples
    dev.close()


def test_every_creation_routes_the_log_whatever_win32_object_it_uses() -> None:
    """The DLL's logger is one global: each creation sets it (it was skipped when a new Win32
    object happened to get the id() of one seen before, leaving the log unrouted)."""
    for _ in range(3):
        win, dev = wintun()
        assert win.logger is not None
        dev.close()
        del win, dev
        gc.collect()


def test_the_logger_thunk_belongs_to_the_process_not_to_a_win32_object(monkeypatch) -> None:
    """The DLL keeps only a function pointer: its thunk must outlive any Win32 object."""
    from tunlab.devices._windows import win32 as win32_module

    monkeypatch.setattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE, raising=False)
    seen: list[tuple[int, str]] = []

    def logger(level: int, _stamp: int, text: str) -> None:
        seen.append((level, text))

    thunk = win32_module.logger_thunk(logger)
    gc.collect()
    assert win32_module.logger_thunk(logger) is thunk
    thunk(2, 0, "hello")  # called through the C pointer, as the DLL does
    assert seen == [(2, "hello")]


def test_removing_an_address() -> None:
    win, dev = wintun()
    dev.config.remove_address(V6.ip)
    assert {str(a) for a in dev.config.addresses()} == {"198.18.0.1/24"}
    with pytest.raises(OSError, match="not an address"):
        dev.config.remove_address(V6.ip)
    dev.close()


# ---- tap-windows6 ---------------------------------------------------------------------------------------
def tap_machine() -> FakeWindows:
    return FakeWindows(taps=[(TAP_GUID, "root\\tap0901")])


def test_tap_opens_the_adapter_sets_media_and_moves_frames() -> None:
    win = FakeWin32(tap_machine())
    dev = TapWindowsDevice.create(config(Layer.L2), win)
    path = "\\\\.\\Global\\{" + str(TAP_GUID).upper() + "}.tap"
    assert [c.args[0] for c in win.calls if c.name == "CreateFileW"] == [path]
    codes = [code for code, _ in win.ioctls]
    assert codes == [W.TAP_IOCTL_GET_VERSION, W.TAP_IOCTL_SET_MEDIA_STATUS]
    assert win.ioctls[1][1] == (1).to_bytes(4, "little")
    frame = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    dev.send(frame)
    assert win.m.tap_written == [frame]
    (handle,) = win.tap_files
    sync = SyncDevice(dev)
    threading.Timer(0.1, win.tap_deliver, (handle, frame)).start()
    assert sync.recv() == frame  # an overlapped read completed by its event
    win.tap_deliver(handle, frame[::-1])
    sync.set_nonblocking(True)
    assert sync.recv() == frame[::-1]
    with pytest.raises(BlockingIOError):
        sync.recv()
    assert dev.config.name() == "TAP 0" and {str(a) for a in dev.config.addresses()} == {
        "198.18.0.1/24",
        "2001:db8::1/64",
    }
    sync.close()
    # what tunlab set is taken back; the adapter (not tunlab's) stays; every handle closed
    assert not win.m.unicast and not win.m.routes and not win.open_handles()
    assert win.ioctls[-1] == (W.TAP_IOCTL_SET_MEDIA_STATUS, (0).to_bytes(4, "little"))
    assert "CancelIoEx" in win.names()


def test_tap_errors_say_what_to_do() -> None:
    with pytest.raises(TunUnavailableError, match=r"none can be added: install.*pnputil /add-driver"):
        TapWindowsDevice.create(config(Layer.L2), FakeWin32())
    machine = tap_machine()
    machine.tap_open.add("\\\\.\\Global\\{" + str(TAP_GUID).upper() + "}.tap")
    with pytest.raises(TunUnavailableError, match="open elsewhere: TAP 0"):
        TapWindowsDevice.create(config(Layer.L2), FakeWin32(machine))
    with pytest.raises(InterfaceExistsError, match="'TAP 0' is open in another program"):
        TapWindowsDevice.create(config(Layer.L2, name="TAP 0"), FakeWin32(machine))
    with pytest.raises(TunUnavailableError, match="no tap-windows6 adapter named 'x'.*TAP 0"):
        TapWindowsDevice.create(config(Layer.L2, name="x"), FakeWin32(tap_machine()))
    with pytest.raises(UnsupportedOperationError, match="NetworkAddress"):
        TapWindowsDevice.create(config(Layer.L2, mac="02:00:5e:00:53:01"), FakeWin32(tap_machine()))


def test_with_no_free_adapter_one_is_added_and_removed_on_close() -> None:
    machine = tap_machine()
    machine.tap_driver = True
    machine.tap_open.add("\\\\.\\Global\\{" + str(TAP_GUID).upper() + "}.tap")  # the old one is busy
    win = FakeWin32(machine)
    dev = TapWindowsDevice.create(config(Layer.L2), win)
    assert len(machine.taps) == 2 and dev.created == "ROOT\\NET\\0000" and dev._owned
    assert dev.config.name() == "TAP 1"
    dev.close()
    assert machine.taps == [(TAP_GUID, "root\\tap0901")], "the added adapter was not removed"
    assert not win.open_handles()


def test_an_adapter_tunlab_only_opened_is_never_removed() -> None:
    machine = tap_machine()
    machine.tap_driver = True
    win = FakeWin32(machine)
    dev = TapWindowsDevice.create(config(Layer.L2), win)
    assert dev.created is None and not dev._owned
    dev.close()
    assert machine.taps == [(TAP_GUID, "root\\tap0901")]
    assert "SetupDiCallClassInstaller(DIF_REMOVE)" not in win.names()


def test_an_added_adapter_whose_configuration_fails_is_removed() -> None:
    machine = FakeWindows(tap_driver=True)
    win = FakeWin32(machine)
    win.fail("CreateUnicastIpAddressEntry", W.ERROR_INVALID_PARAMETER)
    with pytest.raises(OSError, match="adding 198.18.0.1/24"):
        TapWindowsDevice.create(config(Layer.L2), win)
    assert not machine.taps and not machine.devices and not win.open_handles()


def test_a_failed_tap_configuration_closes_the_file_and_takes_back_the_addresses() -> None:
    win = FakeWin32(tap_machine())
    win.fail("CreateUnicastIpAddressEntry", W.ERROR_INVALID_PARAMETER, after=1)
    with pytest.raises(OSError, match="adding 2001:db8::1/64"):
        TapWindowsDevice.create(config(Layer.L2), win)
    assert not win.open_handles() and not win.m.unicast


def test_the_dispatcher_picks_wintun_or_tap_by_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    win = FakeWin32(tap_machine())
    monkeypatch.setattr(WindowsDevice, "win32", classmethod(lambda cls, dll=None: win))
    with DeviceBuilder().backend("win32").build_sync() as tun:
        assert isinstance(tun.backend, WintunDevice) and tun.platform == "win32"
    with DeviceBuilder().backend("win32").layer(Layer.L2).build_sync() as tap:
        assert isinstance(tap.backend, TapWindowsDevice)
    with pytest.raises(UnsupportedOperationError, match="offload.*win32"):
        DeviceBuilder().backend("win32").offload(True).build_sync()


def test_windows_adapter_names_may_hold_spaces_and_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    win = FakeWin32(tap_machine())
    monkeypatch.setattr(WindowsDevice, "win32", classmethod(lambda cls, dll=None: win))
    with DeviceBuilder().backend("win32").name("tunlab VPN adapter 2").build_sync() as dev:
        assert dev.name == "tunlab VPN adapter 2"
    with DeviceBuilder().backend("win32").layer(Layer.L2).name("TAP 0").build_sync() as tap:
        assert tap.name == "TAP 0"
    with pytest.raises(ValueError, match="1 to 127 characters"):
        DeviceBuilder().backend("win32").name("x" * 200).check()
    # the same name is refused for a Unix backend, before anything is made
    with pytest.raises(ValueError, match="whitespace"):
        DeviceBuilder().backend("memory").name("tunlab VPN").check()


def test_trio_waits_on_the_handles_with_wait_for_single_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """trio.lowlevel.WaitForSingleObject exists on Windows only: here it is a stand-in that
    waits on the double's events the way trio's does (until the handle is signalled)."""
    trio = pytest.importorskip("trio")
    win, dev = wintun()
    waited: list[int] = []

    async def wait_for_single_object(handle: int) -> None:
        waited.append(handle)
        while not win._events.get(handle, True):
            await trio.sleep(0.01)

    monkeypatch.setattr(trio.lowlevel, "WaitForSingleObject", wait_for_single_object, raising=False)
    adev = AsyncDevice(SyncDevice(dev))

    async def main() -> bytes:
        threading.Timer(0.1, win.deliver, (session(win), PACKET)).start()
        with trio.fail_after(5):
            got = await adev.recv()

        async def closer() -> None:
            await trio.sleep(0.1)
            await adev.aclose()

        async with trio.open_nursery() as n:
            n.start_soon(closer)
            with pytest.raises(DeviceClosedError):
                await adev.recv()  # close wakes it through the close event
        return got

    assert trio.run(main) == PACKET
    assert win.read_events == {} and set(waited) >= {dev._closing}


def test_an_adapter_of_that_name_is_used_and_left_in_place() -> None:
    win, first = wintun()
    luid = win.m.adapters["tl0"]
    first_session = session(win)
    win.end_session(first_session)  # the first program lets go of its session
    first.session = None
    second = WintunDevice.create(
        config(ipv4=[IPv4Setting(ipaddress.IPv4Interface("198.18.9.1/24"))], ipv6=[]), win
    )
    assert not second._owned and win.m.adapters["tl0"] == luid
    assert {str(a) for a in second.config.addresses()} >= {"198.18.9.1/24"}
    second.close()
    assert "tl0" in win.m.adapters, "an adapter tunlab only opened was removed"
    assert "198.18.9.1" not in {str(a.ip) for a in first.config.addresses()}, "its address was not taken back"
    first.close()
    assert not win.m.adapters


def test_an_adapter_whose_session_another_program_holds_is_refused_clearly() -> None:
    win, first = wintun()
    with pytest.raises(InterfaceExistsError, match="'tl0' exists and its session could not be started"):
        WintunDevice.create(config(), win)
    assert "tl0" in win.m.adapters and first.config.is_running()
    first.close()
    assert not win.m.adapters and not win.open_adapters


def test_tap_windows6_in_tun_mode_moves_bare_ip_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    win = FakeWin32(tap_machine())
    monkeypatch.setattr(WindowsDevice, "win32", classmethod(lambda cls, dll=None: win))
    builder = DeviceBuilder().backend("win32").windows_driver("tap-windows6").ipv4("198.18.5.1", 24)
    with builder.build_sync() as dev:
        assert isinstance(dev.backend, TapWindowsDevice) and dev.layer is Layer.L3
        assert Capability.TAP not in dev.capabilities
        code, data = win.ioctls[1]  # after GET_VERSION: local address, network, netmask
        assert (code, data) == (
            W.TAP_IOCTL_CONFIG_TUN,
            bytes([198, 18, 5, 1, 198, 18, 5, 0, 255, 255, 255, 0]),
        )
        dev.send(PACKET)
        assert win.m.tap_written == [PACKET]
        assert "WintunCreateAdapter" not in win.names()
    with pytest.raises(ValueError, match="CONFIG_TUN.*needs an IPv4"):
        DeviceBuilder().backend("win32").windows_driver("tap-windows6").build_sync()
    with pytest.raises(ValueError, match="ring_capacity: Wintun options"):
        DeviceBuilder().backend("win32").windows_driver("tap-windows6").ring_capacity(1 << 20).ipv4(
            "198.18.5.1", 24
        ).build_sync()
    with pytest.raises(ValueError, match="windows_driver: 'openvpn'"):
        DeviceBuilder().windows_driver("openvpn")


# ---- what Windows and CPython do that a naive double hides --------------------------------------------
def test_setupapi_errors_arrive_signed_and_are_still_recognised() -> None:
    """0xE0000228 (ERROR_NO_COMPAT_DRIVERS) reaches Python as a negative int from
    ctypes.get_last_error and overflows ctypes.FormatError's signed argument: both were turned
    into an OverflowError or a mismatch before; now the no-driver path says what to do."""
    from tunlab.devices._windows.win32 import win_error

    err = win_error("SetupDiEnumDriverInfoW", ctypes.c_int32(W.ERROR_NO_COMPAT_DRIVERS).value)
    assert err.winerror == W.ERROR_NO_COMPAT_DRIVERS == 0xE0000228  # type: ignore[attr-defined]
    assert "0xe0000228" in str(err)
    with pytest.raises(TunUnavailableError, match="none can be added: install"):
        TapWindowsDevice.create(config(Layer.L2), FakeWin32())


def test_an_adapter_another_program_holds_is_seen_as_busy() -> None:
    """tap-windows6 answers a second open with ERROR_GEN_FAILURE: that is "busy", and with a
    driver in the store tunlab then adds an adapter of its own."""
    machine = tap_machine()
    machine.tap_open.add("\\\\.\\Global\\{" + str(TAP_GUID).upper() + "}.tap")
    machine.tap_driver = True
    dev = TapWindowsDevice.create(config(Layer.L2), FakeWin32(machine))
    assert dev.created is not None and dev.config.name() == "TAP 1"
    dev.close()


def test_a_stale_registry_entry_does_not_stop_the_adapter_search() -> None:
    machine = tap_machine()
    machine.stale_taps.append(uuid.UUID("00000000-0000-4000-8000-000000000001"))
    dev = TapWindowsDevice.create(config(Layer.L2), FakeWin32(machine))
    assert dev.config.name() == "TAP 0"
    dev.close()


def test_a_failed_overlapped_read_does_not_wedge_the_device() -> None:
    win = FakeWin32(tap_machine())
    dev = TapWindowsDevice.create(config(Layer.L2), win)
    (handle,) = win.tap_files
    sync = SyncDevice(dev)
    sync.set_nonblocking(True)
    with pytest.raises(BlockingIOError):
        sync.recv()  # a read is now outstanding
    win.fail("GetOverlappedResult", W.ERROR_OPERATION_ABORTED)
    win.tap_deliver(handle, b"\x01" * 60)
    with pytest.raises(OSError, match="GetOverlappedResult"):
        sync.recv()
    frame = b"\x02" * 60
    win.tap_deliver(handle, frame)  # lands in a new read, not in a wedged one
    assert sync.recv() == frame
    sync.close()


def test_close_waits_for_the_cancelled_read_before_freeing_its_buffer() -> None:
    win = FakeWin32(tap_machine())
    dev = TapWindowsDevice.create(config(Layer.L2), win)
    sync = SyncDevice(dev)
    sync.set_nonblocking(True)
    with pytest.raises(BlockingIOError):
        sync.recv()  # a read is outstanding into the device's buffer
    sync.close()
    assert not win.freed_while_held, "the handle was closed while the driver still held the read buffer"
    assert ("GetOverlappedResult", True) in [(c.name, c.args[-1]) for c in win.calls if c.args]
