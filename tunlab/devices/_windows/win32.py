"""The Windows calls the Wintun and tap-windows6 backends make, in one class a test double can
replace (as bsd/system.py is for macOS and the BSDs).

Every function has a typed ctypes prototype; DLLs load with use_last_error, and a failure
becomes OSError(errno-less, winerror=code) with the function's name. Nothing here runs a
subprocess: no netsh, no PowerShell.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from ctypes import POINTER, byref, c_uint32, c_uint64, c_void_p, c_wchar_p
from pathlib import Path
from typing import Any

from tunlab.devices._windows import abi as W

Logger = Callable[[int, int, str], None]  # (level, timestamp in 100 ns since 1601, message)

# Wintun's logger is one global of the DLL, which keeps only the function pointer: each Python
# logger gets one ctypes thunk for the life of the process, never one owned by a Win32 object
# that could be freed while the DLL still calls it.
_thunks: dict[Logger, Any] = {}
_thunks_lock = threading.Lock()


def logger_thunk(logger: Logger) -> Any:
    """The one WINFUNCTYPE thunk for logger (None where ctypes has no WINFUNCTYPE: not Windows)."""
    factory = getattr(ctypes, "WINFUNCTYPE", None)
    if factory is None:
        return None
    with _thunks_lock:
        thunk = _thunks.get(logger)
        if thunk is None:
            thunk = factory(None, ctypes.c_int, c_uint64, c_wchar_p)(
                lambda level, stamp, text: logger(int(level), int(stamp), str(text))
            )
            _thunks[logger] = thunk
        return thunk


def dword(code: int) -> int:
    """A Win32 error code as the DWORD Windows defines it. CPython hands last errors over as a
    signed C int (ctypes.get_last_error), so SetupAPI's 0xE0000228 arrives as -536870360;
    compared with the constants only as a DWORD."""
    return code & 0xFFFFFFFF


def win_error(function: str, code: int) -> OSError:
    """OSError for a Win32 error code (winerror set, as a DWORD; on Windows also the system's
    message: ctypes.FormatError parses a signed int, so a DWORD above 0x7FFFFFFF goes in signed)."""
    code = dword(code)
    fmt = getattr(ctypes, "FormatError", None)
    if fmt is not None:
        text = fmt(code - (1 << 32) if code >= 1 << 31 else code).strip()
        text = f"{text} (error {code:#x})" if code > 0xFFFF else text
    else:
        text = f"error {code:#x}"
    err = OSError(None, f"{function}: {text}")
    err.winerror = code  # type: ignore[attr-defined]
    return err


def winerror_of(exc: BaseException) -> int | None:
    return getattr(exc, "winerror", None)


def wintun_candidates(explicit: str | os.PathLike[str] | None) -> list[str]:
    """Where wintun.dll is looked for, in order: the given path, $TUNLAB_WINTUN_DLL, next to
    this package (a wheel may bundle the official DLL), then the DLL search path."""
    found: list[str] = []
    for path in (explicit, os.environ.get("TUNLAB_WINTUN_DLL")):
        if path:
            found.append(str(path))
    found.append(str(Path(__file__).with_name("wintun.dll")))
    found.append("wintun.dll")
    return found


def wintun_missing(tried: Sequence[str]) -> str:
    """What to do when wintun.dll cannot be loaded. Since Python 3.8 ctypes loads a bare DLL
    name from the interpreter's folder and System32 only: not the script's folder, not PATH."""
    return (
        "wintun.dll was not found (tried: " + "; ".join(tried) + "). Download the official zip "
        "from https://www.wintun.net (wintun-0.14.1.zip: bin/amd64/wintun.dll, bin/arm64/wintun.dll) "
        f"and put wintun.dll in {Path(__file__).parent} (tunlab's own folder) or next to "
        f"{Path(sys.executable).name} in {Path(sys.executable).parent}; or set "
        "TUNLAB_WINTUN_DLL=C:\\path\\wintun.dll or pass DeviceBuilder().wintun_dll(path). "
        "(A DLL next to your script or on PATH is not searched by ctypes.)"
    )


class Win32:
    """kernel32, iphlpapi, advapi32's registry (winreg) and wintun.dll, loaded on first use."""

    def __init__(self, wintun_path: str | os.PathLike[str] | None = None) -> None:
        self.wintun_path = wintun_path
        self._k32: Any = None
        self._ip: Any = None
        self._wt: Any = None
        self._sa: Any = None

    # ---- loading ------------------------------------------------------------------------------
    @staticmethod
    def _dll(name: str) -> Any:
        loader = getattr(ctypes, "WinDLL", None)
        if loader is None:
            raise OSError(None, f"{name}: not on Windows (sys.platform={sys.platform!r})")
        return loader(name, use_last_error=True)

    def _last_error(self) -> int:
        """The calling thread's last error of a use_last_error DLL call, as a DWORD."""
        return dword(self._raw_last_error())

    @staticmethod
    def _raw_last_error() -> int:
        """What CPython reports: ctypes.get_last_error(), a signed C int."""
        get = getattr(ctypes, "get_last_error", None)
        return int(get()) if get is not None else 0

    @property
    def k32(self) -> Any:
        if self._k32 is None:
            k = self._dll("kernel32")
            _proto(k.CreateEventW, c_void_p, [c_void_p, ctypes.c_int, ctypes.c_int, c_wchar_p])
            _proto(k.SetEvent, ctypes.c_int, [c_void_p])
            _proto(k.ResetEvent, ctypes.c_int, [c_void_p])
            _proto(k.CloseHandle, ctypes.c_int, [c_void_p])
            _proto(k.WaitForMultipleObjects, c_uint32, [c_uint32, POINTER(c_void_p), ctypes.c_int, c_uint32])
            _proto(
                k.CreateFileW,
                c_void_p,
                [c_wchar_p, c_uint32, c_uint32, c_void_p, c_uint32, c_uint32, c_void_p],
            )
            _proto(
                k.DeviceIoControl,
                ctypes.c_int,
                [c_void_p, c_uint32, c_void_p, c_uint32, c_void_p, c_uint32, POINTER(c_uint32), c_void_p],
            )
            _proto(k.ReadFile, ctypes.c_int, [c_void_p, c_void_p, c_uint32, POINTER(c_uint32), c_void_p])
            _proto(k.WriteFile, ctypes.c_int, [c_void_p, c_void_p, c_uint32, POINTER(c_uint32), c_void_p])
            _proto(k.GetOverlappedResult, ctypes.c_int, [c_void_p, c_void_p, POINTER(c_uint32), ctypes.c_int])
            _proto(k.CancelIoEx, ctypes.c_int, [c_void_p, c_void_p])
            self._k32 = k
        return self._k32

    @property
    def ip(self) -> Any:
        if self._ip is None:
            d = self._dll("iphlpapi")
            row, fwd, ifrow = (
                POINTER(W.MIB_UNICASTIPADDRESS_ROW),
                POINTER(W.MIB_IPFORWARD_ROW2),
                POINTER(W.MIB_IPINTERFACE_ROW),
            )
            _proto(d.InitializeUnicastIpAddressEntry, None, [row])
            _proto(d.CreateUnicastIpAddressEntry, c_uint32, [row])
            _proto(d.DeleteUnicastIpAddressEntry, c_uint32, [row])
            _proto(d.GetUnicastIpAddressTable, c_uint32, [ctypes.c_uint16, POINTER(c_void_p)])
            _proto(d.FreeMibTable, None, [c_void_p])
            _proto(d.InitializeIpInterfaceEntry, None, [ifrow])
            _proto(d.GetIpInterfaceEntry, c_uint32, [ifrow])
            _proto(d.SetIpInterfaceEntry, c_uint32, [ifrow])
            _proto(d.InitializeIpForwardEntry, None, [fwd])
            _proto(d.CreateIpForwardEntry2, c_uint32, [fwd])
            _proto(d.DeleteIpForwardEntry2, c_uint32, [fwd])
            _proto(d.ConvertInterfaceLuidToIndex, c_uint32, [POINTER(c_uint64), POINTER(c_uint32)])
            _proto(d.ConvertInterfaceLuidToAlias, c_uint32, [POINTER(c_uint64), c_wchar_p, ctypes.c_size_t])
            _proto(d.ConvertInterfaceLuidToGuid, c_uint32, [POINTER(c_uint64), POINTER(W.GUID)])
            _proto(d.ConvertInterfaceGuidToLuid, c_uint32, [POINTER(W.GUID), POINTER(c_uint64)])
            self._ip = d
        return self._ip

    @property
    def wt(self) -> Any:
        if self._wt is None:
            tried: list[str] = []
            for path in wintun_candidates(self.wintun_path):
                try:
                    d = self._dll(path)
                    break
                except OSError as exc:
                    tried.append(f"{path} ({exc.strerror or exc})")
            else:
                raise FileNotFoundError(wintun_missing(tried))
            h = c_void_p
            _proto(d.WintunCreateAdapter, h, [c_wchar_p, c_wchar_p, POINTER(W.GUID)])
            _proto(d.WintunOpenAdapter, h, [c_wchar_p])
            _proto(d.WintunCloseAdapter, None, [h])
            _proto(d.WintunGetAdapterLUID, None, [h, POINTER(c_uint64)])
            _proto(d.WintunStartSession, h, [h, c_uint32])
            _proto(d.WintunEndSession, None, [h])
            _proto(d.WintunGetReadWaitEvent, h, [h])
            _proto(d.WintunReceivePacket, c_void_p, [h, POINTER(c_uint32)])
            _proto(d.WintunReleaseReceivePacket, None, [h, c_void_p])
            _proto(d.WintunAllocateSendPacket, c_void_p, [h, c_uint32])
            _proto(d.WintunSendPacket, None, [h, c_void_p])
            _proto(d.WintunSetLogger, None, [c_void_p])
            self._wt = d
        return self._wt

    @property
    def sa(self) -> Any:
        """setupapi.dll and advapi32's RegQueryValueExW, for adding and removing TAP adapters."""
        if self._sa is None:
            d = self._dll("setupapi")
            dev, info, drv = c_void_p, POINTER(W.SP_DEVINFO_DATA), POINTER(W.SP_DRVINFO_DATA_V2_W)
            guid = POINTER(W.GUID)
            _proto(d.SetupDiCreateDeviceInfoList, dev, [guid, c_void_p])
            _proto(
                d.SetupDiCreateDeviceInfoW,
                ctypes.c_int,
                [dev, c_wchar_p, guid, c_wchar_p, c_void_p, c_uint32, info],
            )
            _proto(d.SetupDiOpenDeviceInfoW, ctypes.c_int, [dev, c_wchar_p, c_void_p, c_uint32, info])
            _proto(
                d.SetupDiSetDeviceRegistryPropertyW, ctypes.c_int, [dev, info, c_uint32, c_void_p, c_uint32]
            )
            _proto(d.SetupDiBuildDriverInfoList, ctypes.c_int, [dev, info, c_uint32])
            _proto(d.SetupDiEnumDriverInfoW, ctypes.c_int, [dev, info, c_uint32, c_uint32, drv])
            _proto(d.SetupDiSetSelectedDriverW, ctypes.c_int, [dev, info, drv])
            _proto(d.SetupDiCallClassInstaller, ctypes.c_int, [c_uint32, dev, info])
            _proto(
                d.SetupDiGetDeviceInstanceIdW,
                ctypes.c_int,
                [dev, info, c_wchar_p, c_uint32, POINTER(c_uint32)],
            )
            _proto(d.SetupDiOpenDevRegKey, c_void_p, [dev, info, c_uint32, c_uint32, c_uint32, c_uint32])
            _proto(d.SetupDiDestroyDriverInfoList, ctypes.c_int, [dev, info, c_uint32])
            _proto(d.SetupDiDestroyDeviceInfoList, ctypes.c_int, [dev])
            reg = self._dll("advapi32")
            _proto(
                reg.RegQueryValueExW,
                ctypes.c_long,
                [c_void_p, c_wchar_p, c_void_p, c_void_p, c_void_p, POINTER(c_uint32)],
            )
            _proto(reg.RegCloseKey, ctypes.c_long, [c_void_p])
            d.reg = reg
            self._sa = d
        return self._sa

    def _fail(self, function: str, code: int | None = None) -> OSError:
        return win_error(function, self._last_error() if code is None else code)

    # ---- Wintun -----------------------------------------------------------------------------------
    def create_adapter(self, name: str, tunnel_type: str, guid: uuid.UUID | None) -> int:
        g = W.GUID.from_uuid(guid) if guid is not None else None
        h = self.wt.WintunCreateAdapter(name, tunnel_type, byref(g) if g is not None else None)
        if not h:
            raise self._fail("WintunCreateAdapter")
        return int(h)

    def open_adapter(self, name: str) -> int:
        h = self.wt.WintunOpenAdapter(name)
        if not h:
            raise self._fail("WintunOpenAdapter")
        return int(h)

    def close_adapter(self, adapter: int) -> None:
        self.wt.WintunCloseAdapter(adapter)

    def adapter_luid(self, adapter: int) -> int:
        value = c_uint64()
        self.wt.WintunGetAdapterLUID(adapter, byref(value))
        return int(value.value)

    def set_logger(self, logger: Logger) -> None:
        """Wintun's log lines go to logger (through its process-wide thunk)."""
        thunk = logger_thunk(logger)
        if thunk is not None:
            self.wt.WintunSetLogger(ctypes.cast(thunk, c_void_p))

    def start_session(self, adapter: int, capacity: int) -> int:
        h = self.wt.WintunStartSession(adapter, capacity)
        if not h:
            raise self._fail("WintunStartSession")
        return int(h)

    def end_session(self, session: int) -> None:
        self.wt.WintunEndSession(session)

    def read_wait_event(self, session: int) -> int:
        return int(self.wt.WintunGetReadWaitEvent(session))

    def receive(self, session: int) -> tuple[int, int]:
        """(address, size) of the next packet in the ring; OSError ERROR_NO_MORE_ITEMS if none."""
        size = c_uint32()
        ptr = self.wt.WintunReceivePacket(session, byref(size))
        if not ptr:
            raise self._fail("WintunReceivePacket")
        return int(ptr), int(size.value)

    def release(self, session: int, packet: int) -> None:
        self.wt.WintunReleaseReceivePacket(session, packet)

    def allocate(self, session: int, size: int) -> int:
        ptr = self.wt.WintunAllocateSendPacket(session, size)
        if not ptr:
            raise self._fail("WintunAllocateSendPacket")
        return int(ptr)

    def send_packet(self, session: int, packet: int) -> None:
        self.wt.WintunSendPacket(session, packet)

    # ---- events and waits ---------------------------------------------------------------------------
    def create_event(self) -> int:
        h = self.k32.CreateEventW(None, 1, 0, None)  # manual reset, not signalled
        if not h:
            raise self._fail("CreateEventW")
        return int(h)

    def set_event(self, handle: int) -> None:
        if not self.k32.SetEvent(handle):
            raise self._fail("SetEvent")

    def reset_event(self, handle: int) -> None:
        if not self.k32.ResetEvent(handle):
            raise self._fail("ResetEvent")

    def close_handle(self, handle: int) -> None:
        self.k32.CloseHandle(handle)

    def wait_any(self, handles: Sequence[int], timeout_ms: int) -> int | None:
        """The index of the first signalled handle, or None on timeout."""
        arr = (c_void_p * len(handles))(*handles)
        result = int(self.k32.WaitForMultipleObjects(len(handles), arr, 0, timeout_ms))
        if result == W.WAIT_TIMEOUT:
            return None
        if result == W.WAIT_FAILED or result >= W.WAIT_OBJECT_0 + len(handles):
            raise self._fail("WaitForMultipleObjects")
        return result - W.WAIT_OBJECT_0

    # ---- files and device ioctls (tap-windows6) ------------------------------------------------------
    def create_file(self, path: str) -> int:
        h = self.k32.CreateFileW(
            path,
            W.GENERIC_READ | W.GENERIC_WRITE,
            0,  # no sharing: the driver is exclusive-open anyway
            None,
            W.OPEN_EXISTING,
            W.FILE_ATTRIBUTE_SYSTEM | W.FILE_FLAG_OVERLAPPED,
            None,
        )
        if not h or int(h) == W.INVALID_HANDLE_VALUE:
            raise self._fail("CreateFileW")
        return int(h)

    def device_io_control(self, handle: int, code: int, data: bytes, out_size: int) -> bytes:
        inbuf = ctypes.create_string_buffer(data, len(data)) if data else None
        outbuf = ctypes.create_string_buffer(out_size) if out_size else None
        got = c_uint32()
        ov = W.OVERLAPPED()
        ov.hEvent = self.create_event()
        try:
            ok = self.k32.DeviceIoControl(
                handle, code, inbuf, len(data), outbuf, out_size, byref(got), byref(ov)
            )
            if not ok:
                code_ = self._last_error()
                if code_ != W.ERROR_IO_PENDING:
                    raise self._fail("DeviceIoControl", code_)
                if not self.k32.GetOverlappedResult(handle, byref(ov), byref(got), 1):
                    raise self._fail("DeviceIoControl")
        finally:
            self.close_handle(int(ov.hEvent))
        return outbuf.raw[: got.value] if outbuf is not None else b""

    def start_read(self, handle: int, address: int, size: int, ov: W.OVERLAPPED) -> int | None:
        """ReadFile overlapped: bytes read now, or None while pending (ov.hEvent signals)."""
        got = c_uint32()
        if self.k32.ReadFile(handle, address, size, byref(got), byref(ov)):
            return int(got.value)
        code = self._last_error()
        if code == W.ERROR_IO_PENDING:
            return None
        raise self._fail("ReadFile", code)

    def write(self, handle: int, address: int, size: int) -> int:
        """WriteFile overlapped, waited for."""
        got = c_uint32()
        ov = W.OVERLAPPED()
        ov.hEvent = self.create_event()
        try:
            if not self.k32.WriteFile(handle, address, size, byref(got), byref(ov)):
                code = self._last_error()
                if code != W.ERROR_IO_PENDING:
                    raise self._fail("WriteFile", code)
                if not self.k32.GetOverlappedResult(handle, byref(ov), byref(got), 1):
                    raise self._fail("WriteFile")
        finally:
            self.close_handle(int(ov.hEvent))
        return int(got.value)

    def overlapped_result(self, handle: int, ov: W.OVERLAPPED, *, wait: bool = False) -> int:
        """The bytes of a finished overlapped operation (wait: until it has finished)."""
        got = c_uint32()
        if not self.k32.GetOverlappedResult(handle, byref(ov), byref(got), int(wait)):
            raise self._fail("GetOverlappedResult")
        return int(got.value)

    def cancel_io(self, handle: int, ov: W.OVERLAPPED) -> None:
        self.k32.CancelIoEx(handle, byref(ov))

    # ---- iphlpapi ------------------------------------------------------------------------------------
    def _check(self, function: str, code: int) -> None:
        if code != W.ERROR_SUCCESS:
            raise win_error(function, code)

    def new_unicast_row(self) -> W.MIB_UNICASTIPADDRESS_ROW:
        row = W.MIB_UNICASTIPADDRESS_ROW()
        self.ip.InitializeUnicastIpAddressEntry(byref(row))
        return row

    def create_unicast(self, row: W.MIB_UNICASTIPADDRESS_ROW) -> None:
        self._check("CreateUnicastIpAddressEntry", self.ip.CreateUnicastIpAddressEntry(byref(row)))

    def delete_unicast(self, row: W.MIB_UNICASTIPADDRESS_ROW) -> None:
        self._check("DeleteUnicastIpAddressEntry", self.ip.DeleteUnicastIpAddressEntry(byref(row)))

    def unicast_rows(self, family: int) -> list[W.MIB_UNICASTIPADDRESS_ROW]:
        table = c_void_p()
        self._check("GetUnicastIpAddressTable", self.ip.GetUnicastIpAddressTable(family, byref(table)))
        try:
            count = ctypes.c_uint32.from_address(int(table.value or 0)).value
            first = int(table.value or 0) + 8  # ULONG NumEntries, then the rows 8-aligned
            size = ctypes.sizeof(W.MIB_UNICASTIPADDRESS_ROW)
            return [W.MIB_UNICASTIPADDRESS_ROW.from_buffer_copy(ctypes.string_at(first + i * size, size))
                    for i in range(count)]  # fmt: skip
        finally:
            self.ip.FreeMibTable(table)

    def get_ip_interface(self, family: int, luid: int) -> W.MIB_IPINTERFACE_ROW:
        row = W.MIB_IPINTERFACE_ROW()
        self.ip.InitializeIpInterfaceEntry(byref(row))
        row.Family, row.InterfaceLuid = family, luid
        self._check("GetIpInterfaceEntry", self.ip.GetIpInterfaceEntry(byref(row)))
        return row

    def set_ip_interface(self, row: W.MIB_IPINTERFACE_ROW) -> None:
        self._check("SetIpInterfaceEntry", self.ip.SetIpInterfaceEntry(byref(row)))

    def new_route_row(self) -> W.MIB_IPFORWARD_ROW2:
        row = W.MIB_IPFORWARD_ROW2()
        self.ip.InitializeIpForwardEntry(byref(row))
        return row

    def create_route(self, row: W.MIB_IPFORWARD_ROW2) -> None:
        self._check("CreateIpForwardEntry2", self.ip.CreateIpForwardEntry2(byref(row)))

    def delete_route(self, row: W.MIB_IPFORWARD_ROW2) -> None:
        self._check("DeleteIpForwardEntry2", self.ip.DeleteIpForwardEntry2(byref(row)))

    def luid_to_index(self, luid: int) -> int:
        index = c_uint32()
        self._check(
            "ConvertInterfaceLuidToIndex",
            self.ip.ConvertInterfaceLuidToIndex(byref(c_uint64(luid)), byref(index)),
        )
        return int(index.value)

    def luid_to_alias(self, luid: int) -> str:
        buf = ctypes.create_unicode_buffer(257)
        self._check(
            "ConvertInterfaceLuidToAlias",
            self.ip.ConvertInterfaceLuidToAlias(byref(c_uint64(luid)), buf, 257),
        )
        return buf.value

    def guid_to_luid(self, guid: uuid.UUID) -> int:
        value = c_uint64()
        self._check(
            "ConvertInterfaceGuidToLuid",
            self.ip.ConvertInterfaceGuidToLuid(byref(W.GUID.from_uuid(guid)), byref(value)),
        )
        return int(value.value)

    # ---- registry: tap-windows6 adapters --------------------------------------------------------------
    def tap_adapters(self) -> list[tuple[uuid.UUID, str]]:
        """(NetCfgInstanceId, ComponentId) of every tap-windows6 adapter in the registry."""
        import importlib

        winreg: Any = importlib.import_module("winreg")  # Windows only

        found: list[tuple[uuid.UUID, str]] = []
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, W.ADAPTER_KEY) as root:
            i = 0
            while True:
                try:
                    sub = winreg.EnumKey(root, i)
                except OSError:
                    break
                i += 1
                try:
                    with winreg.OpenKey(root, sub) as key:
                        component = str(winreg.QueryValueEx(key, "ComponentId")[0]).lower()
                        instance = str(winreg.QueryValueEx(key, "NetCfgInstanceId")[0])
                except OSError:
                    continue
                if component in W.TAP_COMPONENT_IDS:
                    found.append((uuid.UUID(instance.strip("{}")), component))
        return found

    def create_tap_adapter(self, hardware_id: str = W.TAP_HARDWARE_ID) -> tuple[str, uuid.UUID]:
        """Add a root-enumerated tap-windows6 adapter with the driver already in the store, as
        tapctl does (register the device, pick the newest compatible driver, install); returns
        (device instance id, NetCfgInstanceId). Removed again if any step fails."""
        sa = self.sa
        klass = W.GUID.from_uuid(W.GUID_DEVCLASS_NET)
        devs = sa.SetupDiCreateDeviceInfoList(byref(klass), None)
        if not devs or int(devs) == W.INVALID_HANDLE_VALUE:
            raise self._fail("SetupDiCreateDeviceInfoList")
        info = W.SP_DEVINFO_DATA(cbSize=ctypes.sizeof(W.SP_DEVINFO_DATA))
        registered = False
        try:
            if not sa.SetupDiCreateDeviceInfoW(
                devs, "Net", byref(klass), None, None, W.DICD_GENERATE_ID, byref(info)
            ):
                raise self._fail("SetupDiCreateDeviceInfoW")
            ids = ctypes.create_unicode_buffer(hardware_id + "\0")  # REG_MULTI_SZ: ends in two NULs
            size = (len(hardware_id) + 2) * 2
            if not sa.SetupDiSetDeviceRegistryPropertyW(devs, byref(info), W.SPDRP_HARDWAREID, ids, size):
                raise self._fail("SetupDiSetDeviceRegistryPropertyW")
            if not sa.SetupDiBuildDriverInfoList(devs, byref(info), W.SPDIT_COMPATDRIVER):
                raise self._fail("SetupDiBuildDriverInfoList")
            best: W.SP_DRVINFO_DATA_V2_W | None = None
            for i in range(64):
                drv = W.SP_DRVINFO_DATA_V2_W(cbSize=ctypes.sizeof(W.SP_DRVINFO_DATA_V2_W))
                if not sa.SetupDiEnumDriverInfoW(devs, byref(info), W.SPDIT_COMPATDRIVER, i, byref(drv)):
                    break
                if best is None or drv.DriverVersion > best.DriverVersion:
                    best = drv
            if best is None:
                raise win_error("SetupDiEnumDriverInfoW", W.ERROR_NO_COMPAT_DRIVERS)
            if not sa.SetupDiSetSelectedDriverW(devs, byref(info), byref(best)):
                raise self._fail("SetupDiSetSelectedDriverW")
            if not sa.SetupDiCallClassInstaller(W.DIF_REGISTERDEVICE, devs, byref(info)):
                raise self._fail("SetupDiCallClassInstaller(DIF_REGISTERDEVICE)")
            registered = True
            for dif in (W.DIF_REGISTER_COINSTALLERS, W.DIF_INSTALLINTERFACES):
                sa.SetupDiCallClassInstaller(dif, devs, byref(info))  # optional steps, as tapctl
            if not sa.SetupDiCallClassInstaller(W.DIF_INSTALLDEVICE, devs, byref(info)):
                raise self._fail("SetupDiCallClassInstaller(DIF_INSTALLDEVICE)")
            instance = ctypes.create_unicode_buffer(512)
            if not sa.SetupDiGetDeviceInstanceIdW(devs, byref(info), instance, 512, None):
                raise self._fail("SetupDiGetDeviceInstanceIdW")
            guid = self._net_cfg_instance_id(devs, info)
            return instance.value, guid
        except BaseException:
            if registered:
                sa.SetupDiCallClassInstaller(W.DIF_REMOVE, devs, byref(info))
            raise
        finally:
            sa.SetupDiDestroyDriverInfoList(devs, byref(info), W.SPDIT_COMPATDRIVER)
            sa.SetupDiDestroyDeviceInfoList(devs)

    def _net_cfg_instance_id(self, devs: Any, info: W.SP_DEVINFO_DATA) -> uuid.UUID:
        """The adapter's GUID from its driver key (it appears once the install has run)."""
        import time

        sa = self.sa
        for _ in range(50):
            key = sa.SetupDiOpenDevRegKey(
                devs, byref(info), W.DICS_FLAG_GLOBAL, 0, W.DIREG_DRV, W.KEY_QUERY_VALUE
            )
            if key and int(key) != W.INVALID_HANDLE_VALUE:
                try:
                    buf = ctypes.create_unicode_buffer(64)
                    size = c_uint32(ctypes.sizeof(buf))
                    if sa.reg.RegQueryValueExW(key, "NetCfgInstanceId", None, None, buf, byref(size)) == 0:
                        return uuid.UUID(buf.value.strip("{}"))
                finally:
                    sa.reg.RegCloseKey(key)
            time.sleep(0.1)
        raise win_error("SetupDiOpenDevRegKey(NetCfgInstanceId)", W.ERROR_FILE_NOT_FOUND)

    def remove_device(self, instance_id: str) -> None:
        """Remove a device tunlab added (DIF_REMOVE on its instance id)."""
        sa = self.sa
        klass = W.GUID.from_uuid(W.GUID_DEVCLASS_NET)
        devs = sa.SetupDiCreateDeviceInfoList(byref(klass), None)
        if not devs or int(devs) == W.INVALID_HANDLE_VALUE:
            raise self._fail("SetupDiCreateDeviceInfoList")
        try:
            info = W.SP_DEVINFO_DATA(cbSize=ctypes.sizeof(W.SP_DEVINFO_DATA))
            if not sa.SetupDiOpenDeviceInfoW(devs, instance_id, None, 0, byref(info)):
                raise self._fail("SetupDiOpenDeviceInfoW")
            if not sa.SetupDiCallClassInstaller(W.DIF_REMOVE, devs, byref(info)):
                raise self._fail("SetupDiCallClassInstaller(DIF_REMOVE)")
        finally:
            sa.SetupDiDestroyDeviceInfoList(devs)


def _proto(fn: Any, restype: Any, argtypes: list[Any]) -> None:
    fn.restype = restype
    fn.argtypes = argtypes
