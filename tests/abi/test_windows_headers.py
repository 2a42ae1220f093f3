"""The Windows backend's ctypes layouts and constants against the mingw-w64 headers ziglang
ships, compiled for x86_64-windows-gnu and aarch64-windows-gnu: every structure size and field
offset (the ctypes types themselves are measured, not a table of numbers),
CTL_CODE for each tap-windows6 ioctl, error and wait codes. Wintun's and tap-windows6's own
values, which mingw does not carry, are checked against their headers' lines (cross-os-abi.md
§8-9)."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest

from tests.abi.probe import compile_object, compile_probe, find_tagged
from tunlab.devices._windows import abi as W

HEADERS = ["winsock2.h", "ws2tcpip.h", "windows.h", "winioctl.h", "ifdef.h", "netioapi.h", "iphlpapi.h",
           "setupapi.h", "devguid.h"]  # fmt: skip
STRUCTS = {
    "GUID": W.GUID,
    "SOCKADDR_IN": W.SOCKADDR_IN,
    "SOCKADDR_IN6": W.SOCKADDR_IN6,
    "SOCKADDR_INET": W.SOCKADDR_INET,
    "IP_ADDRESS_PREFIX": W.IP_ADDRESS_PREFIX,
    "MIB_UNICASTIPADDRESS_ROW": W.MIB_UNICASTIPADDRESS_ROW,
    "MIB_IPFORWARD_ROW2": W.MIB_IPFORWARD_ROW2,
    "MIB_IPINTERFACE_ROW": W.MIB_IPINTERFACE_ROW,
    "OVERLAPPED": W.OVERLAPPED,
    "SP_DEVINFO_DATA": W.SP_DEVINFO_DATA,
    "FILETIME": W.FILETIME,
    "SP_DRVINFO_DATA_V2_W": W.SP_DRVINFO_DATA_V2_W,
}
# C field names where ctypes' differ (anonymous unions in the C struct)
C_FIELD = {("OVERLAPPED", "Offset"): "Offset", ("OVERLAPPED", "OffsetHigh"): "OffsetHigh"}
CONSTANTS = {
    "AF_INET": W.AF_INET,
    "AF_INET6": W.AF_INET6,
    "ERROR_FILE_NOT_FOUND": W.ERROR_FILE_NOT_FOUND,
    "ERROR_ACCESS_DENIED": W.ERROR_ACCESS_DENIED,
    "ERROR_INVALID_HANDLE": W.ERROR_INVALID_HANDLE,
    "ERROR_INVALID_DATA": W.ERROR_INVALID_DATA,
    "ERROR_GEN_FAILURE": W.ERROR_GEN_FAILURE,
    "ERROR_SHARING_VIOLATION": W.ERROR_SHARING_VIOLATION,
    "ERROR_HANDLE_EOF": W.ERROR_HANDLE_EOF,
    "ERROR_INVALID_PARAMETER": W.ERROR_INVALID_PARAMETER,
    "ERROR_BUFFER_OVERFLOW": W.ERROR_BUFFER_OVERFLOW,
    "ERROR_ALREADY_EXISTS": W.ERROR_ALREADY_EXISTS,
    "ERROR_NO_MORE_ITEMS": W.ERROR_NO_MORE_ITEMS,
    "ERROR_OPERATION_ABORTED": W.ERROR_OPERATION_ABORTED,
    "ERROR_IO_INCOMPLETE": W.ERROR_IO_INCOMPLETE,
    "ERROR_IO_PENDING": W.ERROR_IO_PENDING,
    "ERROR_NOT_FOUND": W.ERROR_NOT_FOUND,
    "ERROR_OBJECT_ALREADY_EXISTS": W.ERROR_OBJECT_ALREADY_EXISTS,
    "INFINITE": W.INFINITE,
    "WAIT_OBJECT_0": W.WAIT_OBJECT_0,
    "WAIT_TIMEOUT": W.WAIT_TIMEOUT,
    "WAIT_FAILED": W.WAIT_FAILED,
    "GENERIC_READ": W.GENERIC_READ,
    "GENERIC_WRITE": W.GENERIC_WRITE,
    "OPEN_EXISTING": W.OPEN_EXISTING,
    "FILE_ATTRIBUTE_SYSTEM": W.FILE_ATTRIBUTE_SYSTEM,
    "FILE_FLAG_OVERLAPPED": W.FILE_FLAG_OVERLAPPED,
    "(int)IpDadStatePreferred": W.IP_DAD_STATE_PREFERRED,
    "(int)IpDadStateTentative": W.IP_DAD_STATE_TENTATIVE,
    "(int)MIB_IPPROTO_NETMGMT": W.MIB_IPPROTO_NETMGMT,
    "IF_TYPE_PROP_VIRTUAL": W.IF_TYPE_PROP_VIRTUAL,
    "FILE_DEVICE_UNKNOWN": W.FILE_DEVICE_UNKNOWN,
    "METHOD_BUFFERED": W.METHOD_BUFFERED,
    "FILE_ANY_ACCESS": W.FILE_ANY_ACCESS,
    "DICD_GENERATE_ID": W.DICD_GENERATE_ID,
    "SPDRP_HARDWAREID": W.SPDRP_HARDWAREID,
    "DIF_REGISTERDEVICE": W.DIF_REGISTERDEVICE,
    "DIF_REMOVE": W.DIF_REMOVE,
    "DIF_INSTALLDEVICE": W.DIF_INSTALLDEVICE,
    "DIF_INSTALLINTERFACES": W.DIF_INSTALLINTERFACES,
    "DIF_REGISTER_COINSTALLERS": W.DIF_REGISTER_COINSTALLERS,
    "SPDIT_COMPATDRIVER": W.SPDIT_COMPATDRIVER,
    "DICS_FLAG_GLOBAL": W.DICS_FLAG_GLOBAL,
    "DIREG_DRV": W.DIREG_DRV,
    "KEY_QUERY_VALUE": W.KEY_QUERY_VALUE,
    "LINE_LEN": W.LINE_LEN,
    "(unsigned)ERROR_NO_DRIVER_SELECTED": W.ERROR_NO_DRIVER_SELECTED,
    "(unsigned)ERROR_NO_COMPAT_DRIVERS": W.ERROR_NO_COMPAT_DRIVERS,
}
# each tap-windows6 code is CTL_CODE(FILE_DEVICE_UNKNOWN, n, METHOD_BUFFERED, FILE_ANY_ACCESS)
TAP_CODES = {
    "GET_MAC": (1, W.TAP_IOCTL_GET_MAC),
    "GET_VERSION": (2, W.TAP_IOCTL_GET_VERSION),
    "GET_MTU": (3, W.TAP_IOCTL_GET_MTU),
    "SET_MEDIA_STATUS": (6, W.TAP_IOCTL_SET_MEDIA_STATUS),
    "CONFIG_TUN": (10, W.TAP_IOCTL_CONFIG_TUN),
}


def expected() -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for cname, ctype in STRUCTS.items():
        out[f"sizeof({cname})"] = (f"sizeof({cname})", ctypes.sizeof(ctype))
        for field, *_ in ctype._fields_:
            if cname in ("SOCKADDR_INET",):
                continue  # a union: every member at 0, checked below
            cfield = C_FIELD.get((cname, field), field)
            out[f"{cname}.{field}"] = (f"offsetof({cname}, {cfield})", getattr(ctype, field).offset)
    out["SOCKADDR_INET.Ipv6"] = ("offsetof(SOCKADDR_INET, Ipv6)", 0)
    out["alignof(SOCKADDR_INET)"] = ("_Alignof(SOCKADDR_INET)", ctypes.alignment(W.SOCKADDR_INET))
    out["sizeof(NET_LUID)"] = ("sizeof(NET_LUID)", 8)
    for expr, value in CONSTANTS.items():
        out[expr] = (expr, value)
    for name, (n, value) in TAP_CODES.items():
        out[f"TAP {name}"] = (f"CTL_CODE(FILE_DEVICE_UNKNOWN, {n}, METHOD_BUFFERED, FILE_ANY_ACCESS)", value)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abi-windows")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_windows_layouts_and_numbers_are_the_headers(arch: str, workdir: Path) -> None:
    want = expected()
    got = compile_probe(f"{arch}-windows-gnu", HEADERS, {k: v[0] for k, v in want.items()}, workdir)
    wrong = {k: (got[k], v[1]) for k, v in want.items() if got[k] != v[1]}
    assert not wrong, f"windows/{arch}: " + "; ".join(
        f"{k}: headers {a!r} vs tunlab {b!r}" for k, (a, b) in wrong.items()
    )


def test_the_values_no_mingw_header_has_match_wintun_h_and_tap_windows_h() -> None:
    """wintun.h (HEAD ec0a6b9) and tap-windows.h (v9.27.0) are not in mingw-w64."""
    assert W.WINTUN_MIN_RING_CAPACITY == 0x20000  # wintun.h:153
    assert W.WINTUN_MAX_RING_CAPACITY == 0x4000000  # wintun.h:158
    assert W.WINTUN_MAX_IP_PACKET_SIZE == 0xFFFF  # wintun.h:203
    assert W.MAX_ADAPTER_NAME == 128  # wintun.h:57 (names <= MAX_ADAPTER_NAME - 1 WCHARs)
    # tap-windows.h:39-52 as the driver computes them: (0x22 << 16) | (n << 2)
    assert [W.TAP_IOCTL_GET_MAC, W.TAP_IOCTL_GET_VERSION, W.TAP_IOCTL_GET_MTU] == [
        0x220004,
        0x220008,
        0x22000C,
    ]
    assert (W.TAP_IOCTL_SET_MEDIA_STATUS, W.TAP_IOCTL_CONFIG_TUN) == (0x220018, 0x220028)
    assert W.TAP_DEVICE_PATH.format(guid="X") == r"\\.\Global\{X}.tap"  # tap-windows.h:77-80
    # NET_LUID's bitfields (ifdef.h: Reserved:24, NetLuidIndex:24, IfType:16) cannot be read in
    # a constant expression; their packing as measured from the headers (abi-from-headers.md)
    # devguid.h defines GUID_DEVCLASS_NET as an extern object, not a constant expression
    assert str(W.GUID_DEVCLASS_NET).upper() == "4D36E972-E325-11CE-BFC1-08002BE10318"
    assert W.luid(53, 7) == (53 << 48) | (7 << 24)
    assert W.luid(6, 0xFFFFFF) >> 24 & 0xFFFFFF == 0xFFFFFF


LUIDS = [(53, 7), (6, 0xABCDEF), (0xFFFF, 0xFFFFFF)]
LUID_MAGIC = (0x54554E4C4C554944, 0x5041434B494E4721)  # "TUNLLUID" "PACKING!"


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_net_luid_bitfields_pack_as_tunlab_packs_them(arch: str, workdir: Path) -> None:
    """NET_LUID's bitfields (ifdef.h: Reserved:24, NetLuidIndex:24, IfType:16) cannot be read in
    a constant expression: the compiler lays out initialized NET_LUIDs, and their bytes are read
    back from the object file."""
    inits = ", ".join(f"{{.Info = {{.NetLuidIndex = {i}, .IfType = {t}}}}}" for t, i in LUIDS)
    src = "".join(f"#include <{h}>\n" for h in HEADERS) + (
        "#include <stdint.h>\n"
        f"__attribute__((used)) const struct {{ uint64_t magic[2]; NET_LUID l[{len(LUIDS)}]; }} tl_luid = "
        f"{{{{0x{LUID_MAGIC[0]:016x}ULL, 0x{LUID_MAGIC[1]:016x}ULL}}, {{{inits}}}}};\n"
    )
    raw = find_tagged(compile_object(f"{arch}-windows-gnu", src, workdir, "luid"), LUID_MAGIC, 8 * len(LUIDS))
    got = list(struct.unpack(f"<{len(LUIDS)}Q", raw))
    assert got == [W.luid(t, i) for t, i in LUIDS]
