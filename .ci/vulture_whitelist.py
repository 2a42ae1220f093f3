"""Names vulture cannot see used: called by a framework, read through reflection, or public API
that the project itself does not call. Each group says why; anything else unused is dead code
and `make lint` fails on it."""

# ruff: noqa
# mypy: ignore-errors
from tunlab.devices._bsd import abi as bsd_abi
from tunlab.devices._sync import SyncDevice
from tunlab.devices._windows import ipconfig, win32
from tunlab._linux.netns import NetNamespace
from tunlab.relay.impair import _packet as packet
from tunlab.testing._traffic.one_way import OneWayResult
from tunlab.topologies._state import LabState

# public API mirroring tun-rs (the interruptible vectored I/O), used by programs, not by tunlab
SyncDevice.recv_vectored_intr
SyncDevice.send_vectored_intr
NetNamespace.read_sysctl
OneWayResult.mean_ms
OneWayResult.stdev_ms
OneWayResult.send_errors

# a family of header values kept whole (their positions are the ABI): route message flags
bsd_abi.RTM_GET
bsd_abi.RTF_GATEWAY
bsd_abi.RTF_HOST
bsd_abi.RTA_GENMASK
bsd_abi.RTA_IFA
bsd_abi.RTA_IFP
packet.ECT0
packet.ECT1

# ctypes structure fields, filled by the OS
ipconfig.SOCKADDR_IN.sin_family
ipconfig.SOCKADDR_IN6.sin6_family
ipconfig.MIB_IPFORWARD_ROW2.Metric

# kept alive on purpose: the Wintun DLL holds only a pointer to the logger callback
win32.Win32._logger_ref

# written to the state file and shown by `tunlab ls`/inspect from JSON
LabState.created_at

# parameters a caller passes by name: pytest's dynamic scope, the context-manager protocol
fixture_name
tb

# the simulated cluster's public API: tests and users run programs on a host with it
from tunlab.cluster._simulation import SimulatedCluster

SimulatedCluster.run_on
