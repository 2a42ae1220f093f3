"""The macOS backend driven through a syscall-level double: the exact calls and bytes of
create -> configure -> I/O -> close for utun and feth, and the rollback after a failure at
each step. The byte layouts themselves are checked against macOS's headers in tests/abi/."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections import deque

import pytest

from tests.devices.bsd_double import FakeKernel, RecordingSystem
from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.devices._config import DeviceConfig, IPv4Setting
from tunlab.devices._darwin.backend import DarwinDevice, FethTap, Utun, fake_request
from tunlab.devices._layer import Layer
from tunlab.errors import DeviceError, DevicePermissionError, InterfaceExistsError

ABI = A.DARWIN
V4 = ipaddress.IPv4Interface("198.18.0.1/24")
V6 = ipaddress.IPv6Interface("2001:db8::1/64")


def config(layer: Layer = Layer.L3, **kw: object) -> DeviceConfig:
    cfg = DeviceConfig(layer=layer, mtu=1400, ipv4=[IPv4Setting(V4)], ipv6=[V6], enabled=True)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def make(layer: Layer = Layer.L3, kernel: FakeKernel | None = None, **kw: object):
    sys = RecordingSystem(ABI, kernel)
    dev = DarwinDevice.create(config(layer, **kw), sys=sys)
    return sys, dev


# ---- utun ---------------------------------------------------------------------------------------
def test_utun_is_a_kernel_control_socket_named_by_the_kernel() -> None:
    sys, dev = make()
    assert isinstance(dev, Utun)
    first = sys.calls[0]
    assert (first.name, first.args) == ("socket", (A.AF_SYSTEM, socket.SOCK_DGRAM, A.SYSPROTO_CONTROL))
    assert sys.calls[1].name == "connect_control" and sys.calls[1].args == (A.UTUN_CONTROL_NAME, 0)
    assert sys.calls[2].args == (A.SYSPROTO_CONTROL, A.UTUN_OPT_IFNAME, 16)
    assert dev.config.name() == "utun7"


def test_utun_configuration_is_these_ioctls_with_these_bytes() -> None:
    sys, dev = make()
    mtu = sys.ioctls(ABI.SIOCSIFMTU)
    assert mtu[0].data == bytes(wire.ifreq_int(ABI, "utun7", 1400))
    assert not sys.ioctls(ABI.SIOCSIFFLAGS)  # a utun is up from birth (xnu utun_attach_utun)
    v4 = sys.ioctls(ABI.SIOCAIFADDR)[0].data
    assert len(v4) == 64 and v4[:5] == b"utun7"
    # address, then the peer (point-to-point: the subnet's broadcast address), then the mask
    assert v4[16:32] == struct.pack("BBH4s8x", 16, 2, 0, V4.ip.packed)
    assert v4[32:48] == struct.pack("BBH4s8x", 16, 2, 0, ipaddress.IPv4Address("198.18.0.255").packed)
    assert v4[48:64] == struct.pack("BBH4s8x", 16, 2, 0, ipaddress.IPv4Address("255.255.255.0").packed)
    v6 = sys.ioctls(ABI.SIOCAIFADDR_IN6)[0].data
    assert len(v6) == 128
    assert v6[16:44] == struct.pack("BBHI16sI", 28, 30, 0, 0, V6.ip.packed, 0)
    assert v6[44:72] == bytes(28)  # no destination: a prefix, not a /128 peer
    assert v6[72:100] == struct.pack("BBHI16sI", 28, 30, 0, 0, V6.network.netmask.packed, 0)
    assert struct.unpack_from("i", v6, 100)[0] == 0x20  # IN6_IFF_NODAD
    assert struct.unpack_from("qqII", v6, 104) == (0, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    # each address's subnet is routed to the interface through PF_ROUTE
    routes = sys.route_messages()
    assert len(routes) == 2
    msg = routes[0]
    assert struct.unpack_from("HBB", msg, 0) == (len(msg), 5, A.RTM_ADD)
    assert struct.unpack_from("i", msg, 12)[0] == A.RTA_DST | A.RTA_GATEWAY | A.RTA_NETMASK
    assert msg[92:108] == struct.pack("BBH4s8x", 16, 2, 0, V4.network.network_address.packed)
    assert msg[108:110] == bytes([20, 18])  # a sockaddr_dl naming the interface as the gateway


def test_utun_frames_have_the_address_family_word_outside_the_callers_buffer() -> None:
    sys, dev = make()
    fd = dev.fileno()
    pkt6 = bytes([0x60]) + bytes(39)
    sys.kernel.reads[fd] = deque([struct.pack("!I", 30) + pkt6])
    buf = bytearray(100)
    assert dev.recv_into(buf) == 40 and bytes(buf[:40]) == pkt6
    dev.send(pkt6)
    assert sys.calls[-1].data == struct.pack("!I", 30) + pkt6
    dev.send(bytes([0x45]) + bytes(19))
    assert sys.calls[-1].data[:4] == struct.pack("!I", 2)
    with pytest.raises(ValueError, match="not an IP packet"):
        dev.send(b"\x00\x01")


def test_packet_information_keeps_the_header_for_the_caller() -> None:
    sys, dev = make(packet_information=True)
    assert dev.frame_format.prefix == 4 and dev.frame_format.packet_information
    dev.send(b"\x00\x00\x00\x1e" + bytes([0x60]) + bytes(39))
    assert sys.calls[-1].name == "write"


def test_an_explicit_utun_unit_and_its_errors() -> None:
    sys, dev = make(name="utun5")
    assert sys.calls[1].args == (A.UTUN_CONTROL_NAME, 6)
    with pytest.raises(InterfaceExistsError, match="utun3 already exists"):
        make(Layer.L3, FakeKernel(busy_units={4}), name="utun3")
    with pytest.raises(DevicePermissionError, match="run as root"):
        make(kernel=FakeKernel(root=False))
    with pytest.raises(ValueError, match="named utunN"):
        make(name="tun0")


def test_close_deletes_the_routes_and_the_socket() -> None:
    sys, dev = make()
    fd = dev.fileno()
    dev.close()
    deletes = [m for m in sys.route_messages() if m[3] == A.RTM_DELETE]
    assert len(deletes) == 2
    assert fd not in sys.open_fds and not sys.open_fds  # every socket it opened is closed
    dev.close()  # twice is fine


@pytest.mark.parametrize("step", ["SIOCSIFMTU", "SIOCSIFFLAGS", "SIOCAIFADDR", "SIOCAIFADDR_IN6"])
def test_a_failed_configuration_rolls_the_utun_back(step: str) -> None:
    sys = RecordingSystem(ABI)
    request = getattr(ABI, step)
    sys.fail_at(lambda c: c.name == "ioctl" and c.args[0] == request, errno.EINVAL)
    with pytest.raises(DeviceError):  # enabled=False: the utun, born up, is brought down
        DarwinDevice.create(config(enabled=False), sys=sys)
    assert not sys.open_fds, f"left open after a failure at {step}: {sys.open_fds}"
    kinds = [m[3] for m in sys.route_messages()]
    assert kinds.count(A.RTM_ADD) == kinds.count(A.RTM_DELETE)


def test_from_fd_wraps_a_network_extension_socket_without_owning_it() -> None:
    sys = RecordingSystem(ABI)
    fd = sys.socket(A.AF_SYSTEM, socket.SOCK_DGRAM, 2)
    sys.connect_control(fd, A.UTUN_CONTROL_NAME, 3)
    dev = DarwinDevice.from_fd(fd, owned=False, sys=sys)
    assert dev.config.name() == "utun2"
    dev.close()
    assert fd in sys.open_fds  # borrowed: not closed
    with pytest.raises(DeviceError, match="not a utun socket"):
        DarwinDevice.from_fd(sys.socket(2, 2, 0), owned=False, sys=sys)


# ---- feth ---------------------------------------------------------------------------------------
def test_feth_pair_is_created_peered_and_read_through_bpf() -> None:
    sys, dev = make(Layer.L2, mac="02:00:5e:00:53:01")
    assert isinstance(dev, FethTap)
    assert (dev.config.name(), dev.peer) == ("feth0", "feth1")
    creates = sys.ioctls(ABI.SIOCIFCREATE)
    assert [c.data[:4] for c in creates] == [b"feth", b"feth"]
    assert sys.calls[0].args == (A.AF_NDRV, socket.SOCK_RAW, 0)
    # SIOCSDRVSPEC on the I/O side, naming the visible side as its peer
    spec = sys.ioctls(A.SIOCSDRVSPEC)[0].data
    assert len(spec) == 40 and spec[:5] == b"feth1"
    assert struct.unpack_from("QQ", spec, 16) == (A.IF_FAKE_S_CMD_SET_PEER, 160)
    assert sys.drvspec == [bytes(fake_request("feth0"))]
    assert sys.drvspec[0][:32] == bytes(32) and sys.drvspec[0][32:37] == b"feth0"
    ndrv = struct.pack("BB16s", 18, 27, b"feth1")
    assert [c.data for c in sys.calls if c.name in ("bind", "connect")] == [ndrv, ndrv]
    # BPF: /dev/bpf0 busy -> bpf1; the buffer size before the interface
    opens = [c.args[0] for c in sys.calls if c.name == "open"]
    assert opens == ["/dev/bpf0", "/dev/bpf1"]
    bpf_calls = [c.args[0] for c in sys.ioctls() if (c.args[0] >> 8) & 0xFF == ord("B")]
    assert bpf_calls.index(ABI.BIOCSBLEN) < bpf_calls.index(ABI.BIOCSETIF)
    assert A.BIOCSSEESENT in bpf_calls and ABI.BIOCPROMISC in bpf_calls
    assert sys.ioctls(ABI.SIOCSIFLLADDR)[0].data[16:24] == bytes([6, 18]) + bytes.fromhex("02005e005301")
    # the MTU goes on both sides
    assert [c.data[:5] for c in sys.ioctls(ABI.SIOCSIFMTU)] == [b"feth0", b"feth1"]


def test_feth_reads_every_frame_of_one_bpf_buffer_and_writes_through_ndrv() -> None:
    sys, dev = make(Layer.L2)
    f1, f2 = bytes(range(60)), bytes(range(100, 164))
    sys.kernel.reads[dev._fd] = deque([wire.bpf_record(ABI, f1, 18) + wire.bpf_record(ABI, f2, 18)])
    buf = bytearray(2000)
    assert bytes(buf[: dev.recv_into(buf)]) == f1
    assert dev.readiness().wait(timeout=0) is not None  # the second frame is queued: ready
    assert bytes(buf[: dev.recv_into(buf)]) == f2
    reads = [c for c in sys.calls if c.name == "read"]
    assert len(reads) == 1 and reads[0].args == (sys.kernel.blen,)  # exactly BIOCGBLEN's size
    dev.send(f1)
    assert sys.calls[-1].name == "write" and sys.calls[-1].fd == dev._ndrv and sys.calls[-1].data == f1


def test_feth_close_destroys_both_sides() -> None:
    sys, dev = make(Layer.L2)
    dev.close()
    destroyed = [c.data[:5] for c in sys.ioctls(ABI.SIOCIFDESTROY)]
    assert destroyed == [b"feth0", b"feth1"]
    assert not sys.kernel.interfaces and not sys.open_fds


@pytest.mark.parametrize(
    "where",
    ["create-second", "peer", "up", "bind", "connect", "bpf-setif", "address"],
)
def test_a_failure_at_any_step_leaves_no_feth_and_no_fd(where: str) -> None:
    sys = RecordingSystem(ABI)
    predicates = {
        "create-second": lambda c: (
            c.name == "ioctl" and c.args[0] == ABI.SIOCIFCREATE and "feth0" in sys.kernel.interfaces
        ),
        "peer": lambda c: c.name == "ioctl" and c.args[0] == A.SIOCSDRVSPEC,
        "up": lambda c: c.name == "ioctl" and c.args[0] == ABI.SIOCSIFFLAGS,
        "bind": lambda c: c.name == "bind",
        "connect": lambda c: c.name == "connect",
        "bpf-setif": lambda c: c.name == "ioctl" and c.args[0] == ABI.BIOCSETIF,
        "address": lambda c: c.name == "ioctl" and c.args[0] == ABI.SIOCAIFADDR,
    }
    sys.fail_at(predicates[where], errno.EBUSY)
    with pytest.raises((DeviceError, OSError)):
        DarwinDevice.create(config(Layer.L2), sys=sys)
    assert not sys.kernel.interfaces, f"{where}: left {sys.kernel.interfaces}"
    assert not sys.open_fds, f"{where}: left fds {sys.open_fds}"


def test_capabilities_are_honest() -> None:
    from tunlab.devices._capabilities import Capability

    l3, l2 = DarwinDevice.capabilities_for(Layer.L3), DarwinDevice.capabilities_for(Layer.L2)
    for missing in (Capability.MULTI_QUEUE, Capability.OFFLOAD, Capability.NETNS, Capability.PERSIST):
        assert missing not in l3 and missing not in l2
    assert Capability.TAP in l2 and Capability.MAC in l2 and Capability.FROM_FD in l3


# ---- what the kernels do that a naive double hid ----------------------------------------------------
def test_a_utun_is_brought_down_with_its_other_flags_kept() -> None:
    """A utun has IFF_MULTICAST (0x8000): flags are 16 unsigned bits, and enabled(False) clears
    IFF_UP only (struct.pack("h") of 0x8011 raised struct.error before)."""
    sys, dev = make(enabled=False)
    (down,) = sys.ioctls(ABI.SIOCSIFFLAGS)
    assert struct.unpack_from("H", down.data, 16)[0] == A.IFF_POINTOPOINT | A.IFF_MULTICAST
    dev.close()


def test_a_feth_pair_comes_up_with_its_multicast_flag() -> None:
    sys, dev = make(Layer.L2)
    ups = [struct.unpack_from("H", c.data, 16)[0] for c in sys.ioctls(ABI.SIOCSIFFLAGS)]
    assert ups and all(f & A.IFF_UP and f & A.IFF_MULTICAST for f in ups)
    dev.close()


def test_link_local_addresses_come_back_without_the_kame_scope() -> None:
    """xnu hands fe80:7::… out of getifaddrs; the address is fe80::… with scope 7."""
    sys, dev = make(Layer.L2)
    link_local = [a for a in dev.config.addresses() if a.ip.is_link_local]
    assert [str(a) for a in link_local] == ["fe80::5efe:7%7/64"]
    dev.close()


def test_a_feth_tap_sends_frames_larger_than_the_ndrv_default_buffer() -> None:
    """An AF_NDRV socket takes 8 KiB records by default: a 9000-byte jumbo frame failed with a
    bare EMSGSIZE; the send buffer is raised when the pair is made."""
    sys, dev = make(Layer.L2)
    assert ("setsockopt", (A.SOL_SOCKET, A.SO_SNDBUF, 65535 + 14 + 4 + 64)) in [
        (c.name, c.args) for c in sys.calls if c.name == "setsockopt"
    ]
    frame = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + bytes(9000)
    assert dev.send(frame) == len(frame)
    dev.close()
