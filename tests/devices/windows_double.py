"""A test double for the Windows calls (tunlab.devices._windows.win32.Win32): wintun.dll's ring
with real memory the backend copies to and from, kernel32 events and waits (with threads
really blocking), iphlpapi's address/interface/route tables, and tap-windows6 device files —
every call recorded, a failure injectable at any of them, so create → configure → I/O →
close and each rollback are checked on any OS. The layouts themselves are checked against the
mingw-w64 headers in tests/abi/."""

from __future__ import annotations

import ctypes
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tunlab.devices._windows import abi as W
from tunlab.devices._windows.win32 import Win32


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass
class FakeWindows:
    """The machine's state as the double answers it."""

    adapters: dict[str, int] = field(default_factory=dict)  # name -> luid
    inbound: dict[int, deque[bytes]] = field(default_factory=dict)  # session -> packets to read
    sent: list[bytes] = field(default_factory=list)
    ring_free: int = 1 << 30  # bytes the send ring can still take
    terminating: bool = False
    unicast: list[W.MIB_UNICASTIPADDRESS_ROW] = field(default_factory=list)
    interfaces: dict[tuple[int, int], W.MIB_IPINTERFACE_ROW] = field(default_factory=dict)
    routes: list[W.MIB_IPFORWARD_ROW2] = field(default_factory=list)
    site_prefix: int = 64  # what GetIpInterfaceEntry answers (>32 is what Set refuses for v4)
    taps: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    tap_open: set[str] = field(default_factory=set)  # device paths held open elsewhere
    tap_reads: dict[int, deque[bytes]] = field(default_factory=dict)
    tap_written: list[bytes] = field(default_factory=list)
    tap_mtu: int = 1500
    tap_mac: bytes = bytes.fromhex("00ff2a3b4c5d")
    no_dll: bool = False
    tap_driver: bool = False  # the tap-windows6 driver package is in the driver store
    # registry entries of adapters that are gone (removed devices leave their class subkey)
    stale_taps: list[uuid.UUID] = field(default_factory=list)
    devices: dict[str, uuid.UUID] = field(default_factory=dict)  # instance id -> adapter guid


class FakeWin32(Win32):
    """Replaces every Windows call."""

    def __init__(self, machine: FakeWindows | None = None) -> None:
        super().__init__(None)
        self.m = machine or FakeWindows()
        self.calls: list[Call] = []
        self._failures: list[tuple[str, int, int]] = []  # (call name, winerror, after N calls)
        self._cond = threading.Condition()
        self._events: dict[int, bool] = {}  # handle -> signalled
        self._handles = iter(range(0x1000, 1 << 30, 4))
        self.sessions: dict[int, int] = {}  # session -> adapter
        self.read_events: dict[int, int] = {}  # session -> its read-wait event
        self.open_adapters: dict[int, str] = {}
        self.created_by: set[int] = set()  # adapter handles that created their adapter
        self._memory: dict[int, Any] = {}  # address -> the ctypes buffer behind it
        self.released: list[int] = []
        self.logger: Any = None
        self.tap_files: dict[int, str] = {}
        self.ioctls: list[tuple[int, bytes]] = []
        self._pending_reads: dict[int, tuple[int, int, W.OVERLAPPED]] = {}
        # reads CancelIoEx asked to stop, whose completion nobody has collected yet: the driver
        # may still write into their buffer until GetOverlappedResult has waited for them
        self._cancelled: dict[int, W.OVERLAPPED] = {}
        self.freed_while_held: list[int] = []  # tap handles closed with a read still in flight
        self._last = 0

    # ---- helpers for tests ----------------------------------------------------------------------
    def fail(self, name: str, winerror: int, after: int = 0) -> None:
        """Make the (after+1)-th next call of `name` fail with winerror."""
        self._failures.append((name, winerror, after))

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        for i, (fname, code, after) in enumerate(self._failures):
            if fname == name:
                if after:
                    self._failures[i] = (fname, code, after - 1)
                    return
                del self._failures[i]
                raise self._error(name, code)

    def _error(self, name: str, code: int) -> OSError:
        """Fail as a ctypes call of a use_last_error DLL does: CPython keeps the thread's last
        error as a C int (Modules/_ctypes/callproc.c, get_last_error: PyLong_FromLong of an int),
        so 0xE0000228 reaches Python as -536870360; Win32's own code turns it into the error."""
        self._last = ctypes.c_int32(code).value
        return self._fail(name)

    def _raw_last_error(self) -> int:  # type: ignore[override]
        return self._last

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def _handle(self) -> int:
        return next(self._handles)

    def open_handles(self) -> set[int]:
        return set(self._events) | set(self.tap_files)

    def deliver(self, session: int, packet: bytes) -> None:
        """A packet arrives from the OS's side of the adapter."""
        with self._cond:
            self.m.inbound.setdefault(session, deque()).append(packet)
            self._events[self.read_events[session]] = True
            self._cond.notify_all()

    def _keep(self, data: bytes | int) -> int:
        """Memory the DLL would own: a packet to read, or room for one to send."""
        size = len(data) if isinstance(data, bytes) else data
        buf = (ctypes.c_char * size)()
        if isinstance(data, bytes):
            ctypes.memmove(buf, data, size)
        address = ctypes.addressof(buf)
        self._memory[address] = buf
        return address

    # ---- Wintun ---------------------------------------------------------------------------------
    @property
    def wt(self) -> Any:
        if self.m.no_dll:
            raise FileNotFoundError("wintun.dll was not found (tried: wintun.dll). Download ... wintun.net")
        return None

    def _check_dll(self) -> None:
        _ = self.wt

    def create_adapter(self, name: str, tunnel_type: str, guid: uuid.UUID | None) -> int:
        self._check_dll()
        self._record("WintunCreateAdapter", name, tunnel_type, guid)
        if name in self.m.adapters:
            raise self._error("WintunCreateAdapter", W.ERROR_ALREADY_EXISTS)
        luid = W.luid(W.IF_TYPE_PROP_VIRTUAL, len(self.m.adapters) + 1)
        self.m.adapters[name] = luid
        for family in (W.AF_INET, W.AF_INET6):
            row = W.MIB_IPINTERFACE_ROW(Family=family, InterfaceLuid=luid, NlMtu=1500)
            self.m.interfaces[(family, luid)] = row
        handle = self._handle()
        self.open_adapters[handle] = name
        self.created_by.add(handle)
        return handle

    def open_adapter(self, name: str) -> int:
        self._check_dll()
        self._record("WintunOpenAdapter", name)
        if name not in self.m.adapters:
            raise self._error("WintunOpenAdapter", W.ERROR_FILE_NOT_FOUND)
        handle = self._handle()
        self.open_adapters[handle] = name
        return handle

    def close_adapter(self, adapter: int) -> None:
        """Wintun removes the adapter only when the handle that created it closes."""
        self._record("WintunCloseAdapter", adapter)
        name = self.open_adapters.pop(adapter)
        if adapter not in self.created_by:
            return
        self.created_by.discard(adapter)
        luid = self.m.adapters.pop(name)
        self.m.unicast = [r for r in self.m.unicast if r.InterfaceLuid != luid]
        self.m.routes = [r for r in self.m.routes if r.InterfaceLuid != luid]
        for family in (W.AF_INET, W.AF_INET6):
            self.m.interfaces.pop((family, luid), None)

    def adapter_luid(self, adapter: int) -> int:
        self._record("WintunGetAdapterLUID", adapter)
        return self.m.adapters[self.open_adapters[adapter]]

    def set_logger(self, logger: Any) -> None:
        self._record("WintunSetLogger", logger is not None)
        self.logger = logger

    def start_session(self, adapter: int, capacity: int) -> int:
        self._record("WintunStartSession", adapter, capacity)
        if self.open_adapters[adapter] in {self.open_adapters[a] for a in self.sessions.values()}:
            raise self._error("WintunStartSession", W.ERROR_ALREADY_EXISTS)  # one session an adapter
        session = self._handle()
        self.sessions[session] = adapter
        event = self._handle()
        self._events[event] = False
        self.read_events[session] = event
        return session

    def end_session(self, session: int) -> None:
        self._record("WintunEndSession", session)
        del self.sessions[session]
        self._events.pop(self.read_events.pop(session), None)  # the DLL owns and frees it

    def read_wait_event(self, session: int) -> int:
        return self.read_events[session]

    def receive(self, session: int) -> tuple[int, int]:
        self._record("WintunReceivePacket", session)
        if self.m.terminating:
            raise self._error("WintunReceivePacket", W.ERROR_HANDLE_EOF)
        with self._cond:
            queue = self.m.inbound.get(session)
            if not queue:
                raise self._error("WintunReceivePacket", W.ERROR_NO_MORE_ITEMS)
            packet = queue.popleft()
            if not queue:
                self._events[self.read_events[session]] = False
        return self._keep(packet), len(packet)

    def release(self, session: int, packet: int) -> None:
        self._record("WintunReleaseReceivePacket", session, packet)
        self.released.append(packet)
        del self._memory[packet]

    def allocate(self, session: int, size: int) -> int:
        self._record("WintunAllocateSendPacket", session, size)
        if self.m.terminating:
            raise self._error("WintunAllocateSendPacket", W.ERROR_HANDLE_EOF)
        if size > self.m.ring_free:
            raise self._error("WintunAllocateSendPacket", W.ERROR_BUFFER_OVERFLOW)
        return self._keep(size)

    def send_packet(self, session: int, packet: int) -> None:
        self._record("WintunSendPacket", session, packet)
        buf = self._memory.pop(packet)
        self.m.sent.append(bytes(buf))

    # ---- events ---------------------------------------------------------------------------------
    def create_event(self) -> int:
        self._record("CreateEventW")
        handle = self._handle()
        with self._cond:
            self._events[handle] = False
        return handle

    def set_event(self, handle: int) -> None:
        with self._cond:
            self._events[handle] = True
            self._cond.notify_all()

    def reset_event(self, handle: int) -> None:
        with self._cond:
            self._events[handle] = False

    def close_handle(self, handle: int) -> None:
        self._record("CloseHandle", handle)
        with self._cond:
            if handle in self.tap_files:
                if handle in self._pending_reads or handle in self._cancelled:
                    self.freed_while_held.append(handle)
                del self.tap_files[handle]
                self._pending_reads.pop(handle, None)
                self._cancelled.pop(handle, None)
                return
            if handle not in self._events:
                raise self._error("CloseHandle", W.ERROR_INVALID_HANDLE)
            del self._events[handle]

    def wait_any(self, handles: Any, timeout_ms: int) -> int | None:
        self._record("WaitForMultipleObjects", tuple(handles), timeout_ms)
        with self._cond:
            end = None if timeout_ms == W.INFINITE else timeout_ms / 1000
            while True:
                for i, h in enumerate(handles):
                    if h not in self._events:
                        raise self._error("WaitForMultipleObjects", W.ERROR_INVALID_HANDLE)
                    if self._events[h]:
                        return i
                if end is not None and end <= 0:
                    return None
                step = 0.05 if end is None else min(end, 0.05)
                self._cond.wait(step)
                if end is not None:
                    end -= step

    # ---- tap-windows6 -----------------------------------------------------------------------------
    def tap_adapters(self) -> list[tuple[uuid.UUID, str]]:
        self._record("RegEnumKey", W.ADAPTER_KEY)
        return [*((g, W.TAP_HARDWARE_ID) for g in self.m.stale_taps), *self.m.taps]

    def create_tap_adapter(self, hardware_id: str = W.TAP_HARDWARE_ID) -> tuple[str, uuid.UUID]:
        self._record("SetupDiCallClassInstaller(DIF_INSTALLDEVICE)", hardware_id)
        if not self.m.tap_driver:
            raise self._error("SetupDiEnumDriverInfoW", W.ERROR_NO_COMPAT_DRIVERS)
        guid = uuid.uuid4()
        instance = f"ROOT\\NET\\{len(self.m.devices):04d}"
        self.m.devices[instance] = guid
        self.m.taps.append((guid, hardware_id))
        return instance, guid

    def remove_device(self, instance_id: str) -> None:
        self._record("SetupDiCallClassInstaller(DIF_REMOVE)", instance_id)
        guid = self.m.devices.pop(instance_id)
        self.m.taps = [t for t in self.m.taps if t[0] != guid]

    def create_file(self, path: str) -> int:
        self._record("CreateFileW", path)
        if path in self.m.tap_open or path in self.tap_files.values():
            # tap-windows6 lets one handle in: TapDeviceCreate (src/device.c, "Enforce exclusive
            # access") completes a second IRP_MJ_CREATE with STATUS_UNSUCCESSFUL, which Win32
            # reports as ERROR_GEN_FAILURE, not a sharing violation
            raise self._error("CreateFileW", W.ERROR_GEN_FAILURE)
        if not any(W.TAP_DEVICE_PATH.format(guid=str(g).upper()) == path for g, _ in self.m.taps):
            raise self._error("CreateFileW", W.ERROR_FILE_NOT_FOUND)
        handle = self._handle()
        self.tap_files[handle] = path
        self.m.tap_reads.setdefault(handle, deque())
        return handle

    def device_io_control(self, handle: int, code: int, data: bytes, out_size: int) -> bytes:
        self._record("DeviceIoControl", handle, code, data, out_size)
        self.ioctls.append((code, data))
        if code == W.TAP_IOCTL_GET_MAC:
            return self.m.tap_mac
        if code == W.TAP_IOCTL_GET_MTU:
            return self.m.tap_mtu.to_bytes(4, "little")
        if code == W.TAP_IOCTL_GET_VERSION:
            return (9).to_bytes(4, "little") + (27).to_bytes(4, "little") + bytes(4)
        return b""

    def tap_deliver(self, handle: int, frame: bytes) -> None:
        """A frame the OS sends out of the TAP adapter: completes a pending read."""
        with self._cond:
            pending = self._pending_reads.pop(handle, None)
            if pending is None:
                self.m.tap_reads[handle].append(frame)
                return
            address, size, ov = pending
            ctypes.memmove(address, frame, min(size, len(frame)))
            ov.InternalHigh = min(size, len(frame))
            self._events[int(ov.hEvent)] = True
            self._cond.notify_all()

    def start_read(self, handle: int, address: int, size: int, ov: W.OVERLAPPED) -> int | None:
        self._record("ReadFile", handle, size)
        with self._cond:
            queue = self.m.tap_reads[handle]
            if queue:
                frame = queue.popleft()
                ctypes.memmove(address, frame, min(size, len(frame)))
                return min(size, len(frame))
            self._pending_reads[handle] = (address, size, ov)
            return None

    def overlapped_result(self, handle: int, ov: W.OVERLAPPED, *, wait: bool = False) -> int:
        self._record("GetOverlappedResult", handle, wait)
        with self._cond:
            if self._cancelled.pop(handle, None) is not None:
                raise self._error("GetOverlappedResult", W.ERROR_OPERATION_ABORTED)
            if handle in self._pending_reads and not wait:
                raise self._error("GetOverlappedResult", W.ERROR_IO_INCOMPLETE)
        return int(ov.InternalHigh or 0)

    def cancel_io(self, handle: int, ov: W.OVERLAPPED) -> None:
        """CancelIoEx only asks: the read completes (aborted) later, and its event is set."""
        self._record("CancelIoEx", handle)
        with self._cond:
            pending = self._pending_reads.pop(handle, None)
            if pending is not None:
                self._cancelled[handle] = pending[2]
                self._events[int(pending[2].hEvent)] = True
                self._cond.notify_all()

    def write(self, handle: int, address: int, size: int) -> int:
        self._record("WriteFile", handle, size)
        self.m.tap_written.append(ctypes.string_at(address, size))
        return size

    # ---- iphlpapi ----------------------------------------------------------------------------------
    def new_unicast_row(self) -> W.MIB_UNICASTIPADDRESS_ROW:
        row = W.MIB_UNICASTIPADDRESS_ROW()
        row.PrefixOrigin = row.SuffixOrigin = 1  # what Initialize... leaves (IpPrefixOriginManual)
        row.ValidLifetime = row.PreferredLifetime = W.INFINITE_LIFETIME
        return row

    def create_unicast(self, row: W.MIB_UNICASTIPADDRESS_ROW) -> None:
        self._record("CreateUnicastIpAddressEntry", bytes(row))
        if any(
            bytes(r.Address) == bytes(row.Address) and r.InterfaceLuid == row.InterfaceLuid
            for r in self.m.unicast
        ):
            raise self._error("CreateUnicastIpAddressEntry", W.ERROR_OBJECT_ALREADY_EXISTS)
        self.m.unicast.append(W.MIB_UNICASTIPADDRESS_ROW.from_buffer_copy(row))

    def delete_unicast(self, row: W.MIB_UNICASTIPADDRESS_ROW) -> None:
        self._record("DeleteUnicastIpAddressEntry", bytes(row))
        before = len(self.m.unicast)
        self.m.unicast = [r for r in self.m.unicast if bytes(r) != bytes(row)]
        if len(self.m.unicast) == before:
            raise self._error("DeleteUnicastIpAddressEntry", W.ERROR_NOT_FOUND)

    def unicast_rows(self, family: int) -> list[W.MIB_UNICASTIPADDRESS_ROW]:
        self._record("GetUnicastIpAddressTable", family)
        return [
            W.MIB_UNICASTIPADDRESS_ROW.from_buffer_copy(r)
            for r in self.m.unicast
            if r.Address.si_family == family
        ]

    def get_ip_interface(self, family: int, luid: int) -> W.MIB_IPINTERFACE_ROW:
        self._record("GetIpInterfaceEntry", family, luid)
        row = self.m.interfaces.get((family, luid))
        if row is None:
            raise self._error("GetIpInterfaceEntry", W.ERROR_NOT_FOUND)
        copy = W.MIB_IPINTERFACE_ROW.from_buffer_copy(row)
        copy.SitePrefixLength = self.m.site_prefix
        return copy

    def set_ip_interface(self, row: W.MIB_IPINTERFACE_ROW) -> None:
        self._record("SetIpInterfaceEntry", row.Family, row.NlMtu, row.SitePrefixLength)
        limit = 32 if row.Family == W.AF_INET else 128
        if row.SitePrefixLength > limit:
            raise self._error("SetIpInterfaceEntry", W.ERROR_INVALID_PARAMETER)
        self.m.interfaces[(row.Family, row.InterfaceLuid)] = W.MIB_IPINTERFACE_ROW.from_buffer_copy(row)

    def new_route_row(self) -> W.MIB_IPFORWARD_ROW2:
        row = W.MIB_IPFORWARD_ROW2()
        row.ValidLifetime = row.PreferredLifetime = W.INFINITE_LIFETIME
        row.Metric = 0xFFFFFFFF
        return row

    def create_route(self, row: W.MIB_IPFORWARD_ROW2) -> None:
        self._record("CreateIpForwardEntry2", bytes(row))
        self.m.routes.append(W.MIB_IPFORWARD_ROW2.from_buffer_copy(row))

    def delete_route(self, row: W.MIB_IPFORWARD_ROW2) -> None:
        self._record("DeleteIpForwardEntry2", bytes(row))
        before = len(self.m.routes)
        self.m.routes = [r for r in self.m.routes if bytes(r) != bytes(row)]
        if len(self.m.routes) == before:
            raise self._error("DeleteIpForwardEntry2", W.ERROR_NOT_FOUND)

    def luid_to_index(self, luid: int) -> int:
        return (luid >> 24) & 0xFFFFFF

    def luid_to_alias(self, luid: int) -> str:
        for i, (_guid, _component) in enumerate(self.m.taps):
            if W.luid(6, 100 + i) == luid:
                return f"TAP {i}"
        return next(n for n, v in self.m.adapters.items() if v == luid)

    def guid_to_luid(self, guid: uuid.UUID) -> int:
        self._record("ConvertInterfaceGuidToLuid", guid)
        for i, (g, _) in enumerate(self.m.taps):
            if g == guid:
                luid = W.luid(6, 100 + i)
                for family in (W.AF_INET, W.AF_INET6):
                    row = W.MIB_IPINTERFACE_ROW(Family=family, InterfaceLuid=luid, NlMtu=1500)
                    self.m.interfaces.setdefault((family, luid), row)
                return luid
        raise self._error("ConvertInterfaceGuidToLuid", W.ERROR_NOT_FOUND)


def format_error(code: int = 0) -> str:
    """ctypes.FormatError as CPython has it on Windows: it parses its argument as a signed C int
    (Modules/_ctypes/callproc.c, format_error: PyArg_ParseTuple "|i:FormatError"), so a DWORD
    above 0x7FFFFFFF raises OverflowError; FormatMessage knows no SetupAPI codes."""
    if not -(2**31) <= code < 2**31:
        raise OverflowError("signed integer is greater than maximum")
    return "<no description>" if code < 0 else f"Windows message for error {code}"
