"""The Windows structures and numbers the Wintun and tap-windows6 backends use, as ctypes types.

Layouts are x64/arm64 (the same on both: these structs hold no pointers). Every size, offset
and constant here is checked in the test suite against the mingw-w64 headers compiled for
x86_64-windows-gnu and aarch64-windows-gnu (tests/abi/test_windows_headers.py); Wintun's and
tap-windows6's own values, which no mingw header carries, against their headers' lines as cited.
Sources: cross-os-abi.md §8-10.
"""

from __future__ import annotations

import ctypes
import uuid
from ctypes import c_ubyte, c_uint8, c_uint16, c_uint32, c_uint64

AF_INET = 2
AF_INET6 = 23

# ---- winerror.h ---------------------------------------------------------------------------------
ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_DATA = 13
ERROR_GEN_FAILURE = 31  # tap-windows6's answer to a second open of an adapter
ERROR_SHARING_VIOLATION = 32
ERROR_HANDLE_EOF = 38
ERROR_INVALID_PARAMETER = 87
ERROR_BUFFER_OVERFLOW = 111
ERROR_ALREADY_EXISTS = 183
ERROR_NO_MORE_ITEMS = 259
ERROR_OPERATION_ABORTED = 995
ERROR_IO_INCOMPLETE = 996
ERROR_IO_PENDING = 997
ERROR_NOT_FOUND = 1168
ERROR_OBJECT_ALREADY_EXISTS = 5010

# ---- synchapi.h / winbase.h -----------------------------------------------------------------------
INFINITE = 0xFFFFFFFF
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 258
WAIT_FAILED = 0xFFFFFFFF
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
OPEN_EXISTING = 3
FILE_ATTRIBUTE_SYSTEM = 0x4
FILE_FLAG_OVERLAPPED = 0x40000000
INVALID_HANDLE_VALUE = (1 << 64) - 1

# ---- nldef.h / netioapi.h ---------------------------------------------------------------------------
IP_DAD_STATE_PREFERRED = 4  # IpDadStatePreferred: usable at once, no duplicate detection wait
IP_DAD_STATE_TENTATIVE = 1
INFINITE_LIFETIME = 0xFFFFFFFF
MIB_IPPROTO_NETMGMT = 3  # a route set by a management program
IF_TYPE_PROP_VIRTUAL = 53  # ifType of tap-windows6 adapters (*IfType in its INF)

# ---- Wintun (api/wintun.h, HEAD ec0a6b9) ----------------------------------------------------------
WINTUN_MIN_RING_CAPACITY = 0x20000  # :153
WINTUN_MAX_RING_CAPACITY = 0x4000000  # :158
WINTUN_MAX_IP_PACKET_SIZE = 0xFFFF  # :203
MAX_ADAPTER_NAME = 128  # names are at most 127 WCHARs (:57)
WINTUN_LOG_INFO, WINTUN_LOG_WARN, WINTUN_LOG_ERR = 0, 1, 2  # :120-125


# ---- tap-windows6 (src/tap-windows.h, v9.27.0) ----------------------------------------------------
FILE_DEVICE_UNKNOWN = 0x22
METHOD_BUFFERED = 0
FILE_ANY_ACCESS = 0


def ctl_code(device: int, function: int, method: int, access: int) -> int:
    """CTL_CODE from winioctl.h."""
    return (device << 16) | (access << 14) | (function << 2) | method


def tap_control_code(request: int) -> int:
    """TAP_WIN_CONTROL_CODE (tap-windows.h:34-35)."""
    return ctl_code(FILE_DEVICE_UNKNOWN, request, METHOD_BUFFERED, FILE_ANY_ACCESS)


TAP_IOCTL_GET_MAC = tap_control_code(1)  # :39
TAP_IOCTL_GET_VERSION = tap_control_code(2)  # :40, out 3 x ULONG
TAP_IOCTL_GET_MTU = tap_control_code(3)  # :41
TAP_IOCTL_SET_MEDIA_STATUS = tap_control_code(6)  # :44
TAP_IOCTL_CONFIG_TUN = tap_control_code(10)  # :52, in 3 x IPADDR (network byte order)
TAP_COMPONENT_IDS = ("root\\tap0901", "tap0901")  # the INF's two hardware ids
GUID_DEVCLASS_NET = uuid.UUID("4d36e972-e325-11ce-bfc1-08002be10318")
ADAPTER_KEY = "SYSTEM\\CurrentControlSet\\Control\\Class\\{" + str(GUID_DEVCLASS_NET).upper() + "}"
TAP_DEVICE_PATH = "\\\\.\\Global\\{{{guid}}}.tap"  # USERMODEDEVICEDIR + {GUID} + TAP_WIN_SUFFIX

# ---- SetupAPI (setupapi.h) to add a root-enumerated tap adapter -----------------------------------
DICD_GENERATE_ID = 0x1
SPDRP_HARDWAREID = 0x1
SPDIT_COMPATDRIVER = 0x2
DIF_INSTALLDEVICE = 0x2
DIF_REMOVE = 0x5
DIF_REGISTERDEVICE = 0x19
DIF_INSTALLINTERFACES = 0x20
DIF_REGISTER_COINSTALLERS = 0x22
DICS_FLAG_GLOBAL = 0x1
DIREG_DRV = 0x2
KEY_QUERY_VALUE = 0x1
LINE_LEN = 256
ERROR_NO_DRIVER_SELECTED = 0xE0000203  # APPLICATION_ERROR_MASK | ERROR_SEVERITY_ERROR | 0x203
ERROR_NO_COMPAT_DRIVERS = 0xE0000228
TAP_HARDWARE_ID = "root\\tap0901"


# ---- structures ---------------------------------------------------------------------------------------
class GUID(ctypes.Structure):
    _fields_ = [("Data1", c_uint32), ("Data2", c_uint16), ("Data3", c_uint16), ("Data4", c_ubyte * 8)]

    @classmethod
    def from_uuid(cls, value: uuid.UUID) -> GUID:
        return cls.from_buffer_copy(value.bytes_le)


class SOCKADDR_IN(ctypes.Structure):
    _fields_ = [
        ("sin_family", c_uint16),
        ("sin_port", c_uint16),
        ("sin_addr", c_ubyte * 4),
        ("sin_zero", c_ubyte * 8),
    ]


class SOCKADDR_IN6(ctypes.Structure):
    _fields_ = [
        ("sin6_family", c_uint16),
        ("sin6_port", c_uint16),
        ("sin6_flowinfo", c_uint32),
        ("sin6_addr", c_ubyte * 16),
        ("sin6_scope_id", c_uint32),
    ]


class SOCKADDR_INET(ctypes.Union):
    _fields_ = [("Ipv4", SOCKADDR_IN), ("Ipv6", SOCKADDR_IN6), ("si_family", c_uint16)]


class IP_ADDRESS_PREFIX(ctypes.Structure):
    _fields_ = [("Prefix", SOCKADDR_INET), ("PrefixLength", c_uint8)]


class MIB_UNICASTIPADDRESS_ROW(ctypes.Structure):
    _fields_ = [
        ("Address", SOCKADDR_INET),
        ("InterfaceLuid", c_uint64),
        ("InterfaceIndex", c_uint32),
        ("PrefixOrigin", c_uint32),
        ("SuffixOrigin", c_uint32),
        ("ValidLifetime", c_uint32),
        ("PreferredLifetime", c_uint32),
        ("OnLinkPrefixLength", c_uint8),
        ("SkipAsSource", c_uint8),
        ("DadState", c_uint32),
        ("ScopeId", c_uint32),
        ("CreationTimeStamp", c_uint64),
    ]


class MIB_IPFORWARD_ROW2(ctypes.Structure):
    _fields_ = [
        ("InterfaceLuid", c_uint64),
        ("InterfaceIndex", c_uint32),
        ("DestinationPrefix", IP_ADDRESS_PREFIX),
        ("NextHop", SOCKADDR_INET),
        ("SitePrefixLength", c_uint8),
        ("ValidLifetime", c_uint32),
        ("PreferredLifetime", c_uint32),
        ("Metric", c_uint32),
        ("Protocol", c_uint32),
        ("Loopback", c_uint8),
        ("AutoconfigureAddress", c_uint8),
        ("Publish", c_uint8),
        ("Immortal", c_uint8),
        ("Age", c_uint32),
        ("Origin", c_uint32),
    ]


class MIB_IPINTERFACE_ROW(ctypes.Structure):
    _fields_ = [
        ("Family", c_uint16),
        ("InterfaceLuid", c_uint64),
        ("InterfaceIndex", c_uint32),
        ("MaxReassemblySize", c_uint32),
        ("InterfaceIdentifier", c_uint64),
        ("MinRouterAdvertisementInterval", c_uint32),
        ("MaxRouterAdvertisementInterval", c_uint32),
        ("AdvertisingEnabled", c_uint8),
        ("ForwardingEnabled", c_uint8),
        ("WeakHostSend", c_uint8),
        ("WeakHostReceive", c_uint8),
        ("UseAutomaticMetric", c_uint8),
        ("UseNeighborUnreachabilityDetection", c_uint8),
        ("ManagedAddressConfigurationSupported", c_uint8),
        ("OtherStatefulConfigurationSupported", c_uint8),
        ("AdvertiseDefaultRoute", c_uint8),
        ("RouterDiscoveryBehavior", c_uint32),
        ("DadTransmits", c_uint32),
        ("BaseReachableTime", c_uint32),
        ("RetransmitTime", c_uint32),
        ("PathMtuDiscoveryTimeout", c_uint32),
        ("LinkLocalAddressBehavior", c_uint32),
        ("LinkLocalAddressTimeout", c_uint32),
        ("ZoneIndices", c_uint32 * 16),
        ("SitePrefixLength", c_uint32),
        ("Metric", c_uint32),
        ("NlMtu", c_uint32),
        ("Connected", c_uint8),
        ("SupportsWakeUpPatterns", c_uint8),
        ("SupportsNeighborDiscovery", c_uint8),
        ("SupportsRouterDiscovery", c_uint8),
        ("ReachableTime", c_uint32),
        ("TransmitOffload", c_uint8),
        ("ReceiveOffload", c_uint8),
        ("DisableDefaultRoutes", c_uint8),
    ]


class OVERLAPPED(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", c_uint32),
        ("OffsetHigh", c_uint32),
        ("hEvent", ctypes.c_void_p),
    ]


WCHAR = c_uint16  # 2 bytes as on Windows; ctypes.c_wchar is 4 bytes on Linux and macOS


class SP_DEVINFO_DATA(ctypes.Structure):
    _fields_ = [
        ("cbSize", c_uint32),
        ("ClassGuid", GUID),
        ("DevInst", c_uint32),
        ("Reserved", ctypes.c_void_p),
    ]


class FILETIME(ctypes.Structure):
    _fields_ = [("dwLowDateTime", c_uint32), ("dwHighDateTime", c_uint32)]


class SP_DRVINFO_DATA_V2_W(ctypes.Structure):
    _fields_ = [
        ("cbSize", c_uint32),
        ("DriverType", c_uint32),
        ("Reserved", ctypes.c_void_p),
        ("Description", WCHAR * LINE_LEN),
        ("MfgName", WCHAR * LINE_LEN),
        ("ProviderName", WCHAR * LINE_LEN),
        ("DriverDate", FILETIME),
        ("DriverVersion", c_uint64),
    ]


def luid(if_type: int, net_luid_index: int) -> int:
    """NET_LUID's value: Reserved:24, NetLuidIndex:24, IfType:16 (ifdef.h)."""
    return (if_type << 48) | (net_luid_index << 24)
