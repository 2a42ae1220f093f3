"""The FreeBSD, OpenBSD and NetBSD backends driven through the syscall-level double: the exact
calls and bytes of create -> configure -> I/O -> close for tun and tap on each OS, the per-OS
differences (cloning nodes, TUNSIFHEAD, DAD, MAC ioctls, 144-byte ifreq, rename), and the
rollback after a failure at each step. The numbers themselves are checked against each OS's
headers in tests/abi/."""

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
from tunlab.devices._bsd.chardev import CharDevice
from tunlab.devices._bsd.freebsd import FreeBsdDevice
from tunlab.devices._bsd.netbsd import NetBsdDevice
from tunlab.devices._bsd.openbsd import OpenBsdDevice
from tunlab.devices._capabilities import Capability
from tunlab.devices._config import DeviceConfig, IPv4Setting, LinkSettings
from tunlab.devices._layer import Layer
from tunlab.errors import (
    DeviceError,
    DevicePermissionError,
    InterfaceExistsError,
    TunUnavailableError,
    UnsupportedOperationError,
)

V4 = ipaddress.IPv4Interface("198.18.0.1/24")
V6 = ipaddress.IPv6Interface("2001:db8::1/64")
OSES: dict[str, type[CharDevice]] = {
    "freebsd": FreeBsdDevice,
    "openbsd": OpenBsdDevice,
    "netbsd": NetBsdDevice,
}


def config(layer: Layer = Layer.L3, **kw: object) -> DeviceConfig:
    cfg = DeviceConfig(layer=layer, mtu=1400, ipv4=[IPv4Setting(V4)], ipv6=[V6], enabled=True)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def make(os_name: str, layer: Layer = Layer.L3, kernel: FakeKernel | None = None, **kw: object):
    cls = OSES[os_name]
    sys = RecordingSystem(cls.abi, kernel)
    dev = cls.create(config(layer, **kw), sys=sys)
    assert isinstance(dev, CharDevice)
    return sys, dev


def opens(sys: RecordingSystem) -> list[str]:
    return [c.args[0] for c in sys.calls if c.name == "open"]


# ---- tun ----------------------------------------------------------------------------------------
def test_freebsd_clones_a_tun_and_sets_it_up_as_wireguard_go_does() -> None:
    sys, dev = make("freebsd")
    t = A.FREEBSD_TUN
    assert opens(sys) == ["/dev/tun"] and dev.config.name() == "tun0"
    fd = dev.fileno()
    dev_ioctls = [c.args[0] for c in sys.ioctls() if c.fd == fd]
    assert dev_ioctls[:3] == [t.gifname, t.tunsifhead, t.tunsifmode]
    assert (t.gifname, t.tunsifhead, t.tunsifmode) == (0x4020745D, 0x80047460, 0x8004745E)
    assert sys.int_settings[(fd, t.tunsifhead)] == 1
    assert sys.int_settings[(fd, t.tunsifmode)] == A.IFF_POINTOPOINT | A.IFF_MULTICAST
    # DAD off by get-modify-set: the ND6 flags gain NO_DAD, everything else comes back as read
    (sent,) = sys.nd6_set
    assert len(sent) == 72 and sent[:4] == b"tun0"
    assert struct.unpack_from("I", sent, 36)[0] == 0x21 | A.ND6_IFF_NO_DAD
    assert sent[16:36] == sys.kernel.nd6_tail[:20]
    # FreeBSD's own layouts: the 68-byte ifaliasreq and 136-byte in6_aliasreq, NODAD 0x20
    (v4,) = sys.ioctls(A.FREEBSD.SIOCAIFADDR)
    assert A.FREEBSD.SIOCAIFADDR == 0x8044692B and len(v4.data) == 68
    (v6,) = sys.ioctls(A.FREEBSD.SIOCAIFADDR_IN6)
    assert A.FREEBSD.SIOCAIFADDR_IN6 == 0x8088691B and len(v6.data) == 136
    assert struct.unpack_from("i", v6.data, 100)[0] == 0x20


def test_openbsd_scans_for_a_unit_no_interface_has_and_waits_out_dad() -> None:
    kernel = FakeKernel(tentative_reads=3)
    kernel.interfaces["tun0"] = {"flags": 0, "mtu": 1500}  # someone else's
    kernel.open_units.add("tun1")
    kernel.interfaces["tun1"] = {"flags": 0, "mtu": 1500}
    sys, dev = make("openbsd", kernel=kernel)
    assert opens(sys) == ["/dev/tun2"] and dev.config.name() == "tun2"
    fd = dev.fileno()
    assert not [c for c in sys.ioctls() if c.fd == fd and c.args[0] == A.FREEBSD_TUN.tunsifhead]
    assert sys.int_settings[(fd, A.OPENBSD_TUN.tunsifmode)] == A.IFF_POINTOPOINT | A.IFF_MULTICAST
    assert A.OPENBSD_TUN.tunsifmode == 0x8004745D
    # no IN6_IFF_NODAD on OpenBSD: nothing inert is passed, and the address is polled until usable
    (v6,) = sys.ioctls(A.OPENBSD.SIOCAIFADDR_IN6)
    assert struct.unpack_from("i", v6.data, 100)[0] == 0
    assert len(sys.ioctls(A.OPENBSD_TUN.SIOCGIFAFLAG_IN6)) == 4
    assert not sys.nd6_set
    dev.close()
    assert "tun0" in kernel.interfaces and "tun2" not in kernel.interfaces


def test_openbsd_reports_a_duplicate_address() -> None:
    cls = OpenBsdDevice
    sys = RecordingSystem(cls.abi)
    real = sys._answer_tun

    def duplicate(call, req, arg):  # type: ignore[no-untyped-def]
        if req == cls.tun.SIOCGIFAFLAG_IN6:
            struct.pack_into("i", arg, 16, A.IN6_IFF_DUPLICATED)
            return True
        return real(call, req, arg)

    sys._answer_tun = duplicate  # type: ignore[method-assign]
    with pytest.raises(DeviceError, match="duplicate"):
        cls.create(config(), sys=sys)
    assert not sys.open_fds and not sys.kernel.interfaces


def test_netbsd_uses_its_144_byte_ifreq_and_tunsifhead() -> None:
    sys, dev = make("netbsd")
    assert opens(sys) == ["/dev/tun0"]
    assert A.NETBSD.SIOCSIFMTU == 0x8090697F
    (mtu,) = sys.ioctls(A.NETBSD.SIOCSIFMTU)
    assert len(mtu.data) == 144 and struct.unpack_from("i", mtu.data, 16)[0] == 1400
    assert sys.int_settings[(dev.fileno(), A.NETBSD_TUN.tunsifhead)] == 1
    assert A.NETBSD_TUN.tunsifhead == 0x80047442
    (v6,) = sys.ioctls(A.NETBSD.SIOCAIFADDR_IN6)
    assert A.NETBSD.SIOCAIFADDR_IN6 == 0x8080696B and struct.unpack_from("i", v6.data, 100)[0] == 0x20
    # PF_ROUTE: NetBSD's family 34, version 4, a 120-byte header, sockaddrs in RTA bit order
    (route_sock,) = [c for c in sys.calls if c.name == "socket" and c.args[0] == 34][:1]
    assert route_sock.args == (34, socket.SOCK_RAW, 0)
    msg = sys.route_messages()[0]
    assert struct.unpack_from("HBB", msg, 0) == (len(msg), 4, A.RTM_ADD)
    assert msg[120:136] == wire.sockaddr_in(V4.network.network_address)
    assert msg[136] == 32 and msg[137] == A.AF_LINK  # then the gateway sockaddr_dl (32 bytes here)


@pytest.mark.parametrize(("os_name", "af6"), [("freebsd", 28), ("openbsd", 24), ("netbsd", 24)])
def test_tun_frames_keep_the_address_family_word_out_of_the_callers_buffer(os_name: str, af6: int) -> None:
    sys, dev = make(os_name)
    fd = dev.fileno()
    pkt6 = bytes([0x60]) + bytes(39)
    sys.kernel.reads[fd] = deque([struct.pack("!I", af6) + pkt6])
    buf = bytearray(100)
    assert dev.recv_into(buf) == 40 and bytes(buf[:40]) == pkt6
    dev.send(pkt6)
    assert sys.calls[-1].name == "writev" and sys.calls[-1].data == struct.pack("!I", af6) + pkt6


@pytest.mark.parametrize("os_name", sorted(OSES))
def test_close_destroys_what_it_created_and_nothing_else(os_name: str) -> None:
    sys, dev = make(os_name)
    name = dev.config.name()
    dev.close()
    assert name not in sys.kernel.interfaces and not sys.open_fds
    closes = [i for i, c in enumerate(sys.calls) if c.name == "close"]
    destroys = [
        i for i, c in enumerate(sys.calls) if c.name == "ioctl" and c.args[0] == dev.abi.SIOCIFDESTROY
    ]
    assert destroys and destroys[0] > min(closes)  # the fd first, then the interface
    dev.close()  # twice is fine
    # a unit that existed before it was opened by name stays
    kernel = FakeKernel()
    kernel.interfaces["tun3"] = {"flags": 0, "mtu": 1500}
    sys, dev = make(os_name, kernel=kernel, name="tun3")
    dev.close()
    assert "tun3" in kernel.interfaces and not sys.ioctls(dev.abi.SIOCIFDESTROY)


def test_a_named_unit_without_a_node_is_created_then_opened_or_explained() -> None:
    kernel = FakeKernel(missing_nodes={"/dev/tun9"})
    cls = OpenBsdDevice
    sys = RecordingSystem(cls.abi, kernel)
    real_open = sys.open

    def reappearing(path: str, flags: int) -> int:  # SIOCIFCREATE makes the node appear
        if path == "/dev/tun9" and "tun9" in kernel.interfaces:
            kernel.missing_nodes.discard(path)
        return real_open(path, flags)

    sys.open = reappearing  # type: ignore[method-assign]
    dev = cls.create(config(name="tun9"), sys=sys)
    assert dev.config.name() == "tun9" and len(sys.ioctls(cls.abi.SIOCIFCREATE)) == 1
    dev.close()
    assert "tun9" not in kernel.interfaces
    sys = RecordingSystem(cls.abi, FakeKernel(missing_nodes={"/dev/tun9"}))
    with pytest.raises(TunUnavailableError, match="MAKEDEV tun9"):
        cls.create(config(name="tun9"), sys=sys)
    assert not sys.open_fds


@pytest.mark.parametrize("os_name", sorted(OSES))
def test_open_errors_are_typed_and_say_what_to_do(os_name: str) -> None:
    cls = OSES[os_name]
    kernel = FakeKernel(open_units={"tun4"})
    with pytest.raises(InterfaceExistsError, match="tun4 is open in another process"):
        make(os_name, kernel=kernel, name="tun4")
    sys = RecordingSystem(cls.abi)
    sys.fail_at(lambda c: c.name == "open", errno.EACCES)
    with pytest.raises(DevicePermissionError, match="run as root"):
        cls.create(config(name="tun1"), sys=sys)
    with pytest.raises(ValueError, match=r"name: 'wg0'.*named tunN"):
        cls.create(config(name="wg0"), sys=RecordingSystem(cls.abi))
    with pytest.raises(ValueError, match="named tapN"):
        cls.create(config(Layer.L2, name="tun0"), sys=RecordingSystem(cls.abi))


# ---- tap ----------------------------------------------------------------------------------------
MAC = "02:00:5e:00:53:01"


def test_freebsd_tap_clones_and_sets_the_mac_by_siocsiflladdr() -> None:
    sys, dev = make("freebsd", Layer.L2, mac=MAC)
    assert opens(sys) == ["/dev/tap"] and dev.config.name() == "tap0"
    (mac,) = sys.ioctls(A.FREEBSD.SIOCSIFLLADDR)
    assert A.FREEBSD.SIOCSIFLLADDR == 0x8020693C
    assert mac.data[16:24] == bytes([6, A.AF_LINK]) + bytes.fromhex(MAC.replace(":", ""))
    assert not [c for c in sys.ioctls() if c.args[0] in (A.FREEBSD_TUN.tunsifhead, A.FREEBSD_TUN.tunsifmode)]
    frame = bytes(range(60))
    sys.kernel.reads[dev.fileno()] = deque([frame])
    buf = bytearray(2000)
    assert bytes(buf[: dev.recv_into(buf)]) == frame  # Ethernet frames unmodified
    dev.send(frame)
    assert sys.calls[-1].name == "write" and sys.calls[-1].data == frame


def test_openbsd_tap_is_a_tap_unit_with_its_own_lladdr_number() -> None:
    sys, dev = make("openbsd", Layer.L2, mac=MAC)
    assert opens(sys) == ["/dev/tap0"]
    assert A.OPENBSD.SIOCSIFLLADDR == 0x8020691F and len(sys.ioctls(A.OPENBSD.SIOCSIFLLADDR)) == 1


def test_netbsd_tap_clones_or_creates_and_sets_the_mac_by_sioalifaddr() -> None:
    sys, dev = make("netbsd", Layer.L2, mac=MAC)
    assert opens(sys) == ["/dev/tap"] and dev.config.name() == "tap0"
    assert A.NETBSD_TUN.gifname == 0x40906500
    (req,) = sys.ioctls(A.NETBSD_TUN.SIOCALIFADDR)
    assert A.NETBSD_TUN.SIOCALIFADDR == 0x8118691C and len(req.data) == 280
    assert struct.unpack_from("II", req.data, 16) == (A.IFLR_ACTIVE, 0)
    sdl = req.data[24 : 24 + 32]
    assert sdl[:2] == bytes([32, A.AF_LINK]) and sdl[6] == 6 and sdl[8:14] == bytes.fromhex("02005e005301")
    sock = [c for c in sys.calls if c.name == "socket" and c.args[0] == A.AF_LINK]
    assert sock, "SIOCALIFADDR goes on an AF_LINK socket"
    assert sys.kernel.interfaces["tap0"]["mac"] == bytes.fromhex("02005e005301")
    # a named tap is created first: /dev/tapN opens only an existing interface
    kernel = FakeKernel(needs_interface=("tap",))
    sys, dev = make("netbsd", Layer.L2, kernel=kernel, name="tap5")
    assert len(sys.ioctls(A.NETBSD.SIOCIFCREATE)) == 1 and opens(sys) == ["/dev/tap5"]
    dev.close()
    assert "tap5" not in kernel.interfaces


# ---- rollback -------------------------------------------------------------------------------------
def _steps(cls: type[CharDevice]) -> dict[str, int]:
    t, a = cls.tun, cls.abi
    steps = {"TUNSIFMODE": t.tunsifmode, "SIOCSIFMTU": a.SIOCSIFMTU, "SIOCSIFFLAGS": a.SIOCSIFFLAGS,
             "SIOCAIFADDR": a.SIOCAIFADDR, "SIOCAIFADDR_IN6": a.SIOCAIFADDR_IN6}  # fmt: skip
    if t.tunsifhead is not None:
        steps["TUNSIFHEAD"] = t.tunsifhead
    if cls is FreeBsdDevice:
        steps["SIOCGIFINFO_IN6"] = t.SIOCGIFINFO_IN6
        steps["SIOCSIFINFO_IN6"] = t.SIOCSIFINFO_IN6
    if cls is OpenBsdDevice:
        steps["SIOCGIFAFLAG_IN6"] = t.SIOCGIFAFLAG_IN6
    return steps


ROLLBACK = [(o, s) for o, cls in sorted(OSES.items()) for s in sorted(_steps(cls))]


@pytest.mark.parametrize(("os_name", "step"), ROLLBACK)
def test_a_failure_at_any_step_leaves_no_interface_no_fd_and_no_route(os_name: str, step: str) -> None:
    cls = OSES[os_name]
    request = _steps(cls)[step]
    sys = RecordingSystem(cls.abi)
    sys.fail_at(lambda c: c.name == "ioctl" and c.args[0] == request, errno.EINVAL)
    with pytest.raises(DeviceError):
        cls.create(config(), sys=sys)
    assert not sys.kernel.interfaces, f"{step}: left {sys.kernel.interfaces}"
    assert not sys.open_fds, f"{step}: left fds {sys.open_fds}"
    kinds = [m[3] for m in sys.route_messages()]
    assert kinds.count(A.RTM_ADD) == kinds.count(A.RTM_DELETE)


# ---- rename, from_fd, capabilities ---------------------------------------------------------------
def test_freebsd_renames_through_sioscifname_and_others_say_unsupported() -> None:
    sys, dev = make("freebsd")
    dev.config.set_name("vpn0")
    assert dev.config.name() == "vpn0" and "vpn0" in sys.kernel.interfaces
    (req,) = sys.ioctls(A.FREEBSD_TUN.SIOCSIFNAME)
    assert A.FREEBSD_TUN.SIOCSIFNAME == 0x80206928 and req.data[:4] == b"tun0"
    sys.kernel.interfaces["vpn1"] = {}
    with pytest.raises(InterfaceExistsError, match="vpn1"):
        dev.config.set_name("vpn1")
    dev.close()
    assert "vpn0" not in sys.kernel.interfaces  # destroyed under its new name
    _, other = make("openbsd")
    with pytest.raises(UnsupportedOperationError, match="set_name.*openbsd"):
        other.config.set_name("vpn0")
    other.close()


@pytest.mark.parametrize("os_name", sorted(OSES))
def test_from_fd_names_the_unit_keeps_its_framing_and_never_destroys_it(os_name: str) -> None:
    cls = OSES[os_name]
    sys = RecordingSystem(cls.abi)
    fd = sys.open("/dev/tun6", 0)
    dev = cls.from_fd(fd, owned=False, sys=sys)
    assert dev.config.name() == "tun6" and dev.layer is Layer.L3
    if cls.tun.tungifhead is not None:  # the owner never turned the header on: frames are bare
        assert dev.frame_format.prefix == 0
        dev.send(bytes([0x45]) + bytes(19))
        assert sys.calls[-1].name == "write"
    dev.close()
    assert fd in sys.open_fds and "tun6" in sys.kernel.interfaces
    tap = sys.open("/dev/tap" if cls.tun.tap_clone else "/dev/tap1", 0)
    assert cls.from_fd(tap, owned=True, sys=sys).layer is Layer.L2
    with pytest.raises(DeviceError, match="not a tun or tap"):
        cls.from_fd(sys.socket(2, 2, 0), owned=False, sys=sys)


@pytest.mark.parametrize("os_name", sorted(OSES))
def test_capabilities_are_honest(os_name: str) -> None:
    cls = OSES[os_name]
    l3, l2 = cls.capabilities_for(Layer.L3), cls.capabilities_for(Layer.L2)
    for missing in (Capability.MULTI_QUEUE, Capability.OFFLOAD, Capability.NETNS, Capability.PERSIST):
        assert missing not in l3 and missing not in l2
    assert Capability.TAP in l2 and Capability.MAC in l2 and Capability.MAC not in l3
    assert (Capability.SET_NAME in l3) is (os_name == "freebsd")
    _, dev = make(os_name)
    assert dev.capabilities == l3
    with pytest.raises(UnsupportedOperationError, match="capability 'mac'"):
        dev.config.mac_address()


# ---- what the kernels do that a naive double hid ----------------------------------------------------
@pytest.mark.parametrize("os_name", sorted(OSES))
@pytest.mark.parametrize("layer", [Layer.L3, Layer.L2])
def test_a_new_interface_comes_up_with_the_flags_its_kernel_gave_it(os_name: str, layer: Layer) -> None:
    """Every tun and tap is born with IFF_MULTICAST (0x8000): set_up must write 16 unsigned
    bits back (struct.pack("h") raised struct.error on every new device before)."""
    sys, dev = make(os_name, layer)
    (up,) = sys.ioctls(dev.abi.SIOCSIFFLAGS)
    flags = struct.unpack_from("H", up.data, 16)[0]
    assert flags & A.IFF_UP and flags & A.IFF_MULTICAST
    dev.config.configure(LinkSettings(enabled=False))
    down = struct.unpack_from("H", sys.ioctls(dev.abi.SIOCSIFFLAGS)[-1].data, 16)[0]
    assert not down & A.IFF_UP and down & A.IFF_MULTICAST
    dev.close()


def test_freebsd_keeps_the_high_flags_when_it_brings_an_interface_up() -> None:
    """FreeBSD's ifr_flagshigh (flags above 16 bits, e.g. IFF_PPROMISC) sits beside ifr_flags:
    a get-modify-set writes it back as the kernel gave it, never zeroed."""
    kernel = FakeKernel()
    kernel.interfaces["tun0"] = {"flags": A.IFF_POINTOPOINT | A.IFF_MULTICAST, "flagshigh": 0x2, "mtu": 1500}
    sys, dev = make("freebsd", kernel=kernel, name="tun0")
    (up,) = sys.ioctls(A.FREEBSD.SIOCSIFFLAGS)
    assert struct.unpack_from("H", up.data, 18)[0] == 0x2
    assert kernel.interfaces["tun0"]["flagshigh"] == 0x2
    dev.close()


@pytest.mark.parametrize("os_name", ["openbsd", "netbsd"])
def test_kame_link_local_addresses_lose_the_embedded_scope(os_name: str) -> None:
    sys, dev = make(os_name, Layer.L2)
    link_local = [str(a) for a in dev.config.addresses() if a.ip.is_link_local]
    assert link_local == ["fe80::5efe:7%7/64"]  # not fe80:7::5efe:7
    dev.close()
