"""The numbers each BSD-family OS's headers define, in one table per OS.

Sizes and offsets are 64-bit userland (LP64). ioctl numbers are computed from the group,
number and argument size as <sys/ioccom.h> does, so a size that differs (NetBSD's 144-byte
ifreq, FreeBSD's 68-byte ifaliasreq) changes every number that carries it. Every value here is
checked in the test suite against the OS's real headers (tests/abi/, ziglang); the few that no
shipped header carries cite the xnu source line instead. Sources: cross-os-abi.md §1-7.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunlab.devices._bsd.ioccom import IOC_IN, IOC_INOUT, io, ioc, ior, iow, iowr

IFNAMSIZ = 16
AF_INET = 2
AF_LINK = 18
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_POINTOPOINT = 0x10
IFF_RUNNING = 0x40
IFF_MULTICAST = 0x8000
RTM_ADD, RTM_DELETE, RTM_GET = 1, 2, 4
RTF_UP, RTF_GATEWAY, RTF_HOST, RTF_STATIC = 0x1, 0x2, 0x4, 0x800
RTA_DST, RTA_GATEWAY, RTA_NETMASK, RTA_GENMASK, RTA_IFP, RTA_IFA = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
ND6_INFINITE_LIFETIME = 0xFFFFFFFF


@dataclass(frozen=True)
class Abi:
    """One OS's sizes, offsets and ioctl numbers for what the TUN/TAP backends use."""

    os: str
    af_inet6: int
    af_route: int
    ifreq: int  # sizeof(struct ifreq)
    ifaliasreq: int
    in6_aliasreq: int
    sockaddr_dl: int
    bpf_hdr: int  # sizeof(struct bpf_hdr); records carry their own bh_hdrlen
    bpf_align: int  # BPF_WORDALIGN
    bpf_timeval: int  # bytes of the record's timestamp (caplen follows)
    rt_msghdr: int
    rtm_version: int
    rt_flags_at: int
    rt_addrs_at: int
    rt_pid_at: int
    rt_seq_at: int
    rt_errno_at: int
    rt_index_at: int
    rt_sa_align: int  # sockaddrs after rt_msghdr are padded to this
    in6_ifreq: int = 288
    in6_aliasreq_flags_at: int = 100
    in6_aliasreq_lifetime_at: int = 104
    aifaddr_num: int = 26  # SIOCAIFADDR's number
    aifaddr_in6_num: int = 26
    ifcreate_inout: int = IOC_INOUT  # SIOCIFCREATE is _IOWR on macOS/FreeBSD, _IOW on Open/NetBSD
    mtu_nums: tuple[int, int] = (51, 52)  # SIOCGIFMTU, SIOCSIFMTU
    lladdr_num: int | None = 60  # SIOCSIFLLADDR (NetBSD has none)
    in6_iff_nodad: int | None = 0x20  # OpenBSD has none

    # ---- ioctl numbers ------------------------------------------------------------------------
    @property
    def SIOCSIFFLAGS(self) -> int:
        return iow("i", 16, self.ifreq)

    @property
    def SIOCGIFFLAGS(self) -> int:
        return iowr("i", 17, self.ifreq)

    @property
    def SIOCDIFADDR(self) -> int:
        return iow("i", 25, self.ifreq)

    @property
    def SIOCAIFADDR(self) -> int:
        return iow("i", self.aifaddr_num, self.ifaliasreq)

    @property
    def SIOCGIFMTU(self) -> int:
        return iowr("i", self.mtu_nums[0], self.ifreq)

    @property
    def SIOCSIFMTU(self) -> int:
        return iow("i", self.mtu_nums[1], self.ifreq)

    @property
    def SIOCSIFLLADDR(self) -> int | None:
        return None if self.lladdr_num is None else iow("i", self.lladdr_num, self.ifreq)

    @property
    def SIOCIFCREATE(self) -> int:
        return ioc(self.ifcreate_inout, "i", 122 if self.os != "darwin" else 120, self.ifreq)

    @property
    def SIOCIFDESTROY(self) -> int:
        return iow("i", 121, self.ifreq)

    @property
    def SIOCDIFADDR_IN6(self) -> int:
        return iow("i", 25, self.in6_ifreq)

    @property
    def SIOCAIFADDR_IN6(self) -> int:
        return iow("i", self.aifaddr_in6_num, self.in6_aliasreq)

    @property
    def BIOCGBLEN(self) -> int:
        return ior("B", 102, 4)

    @property
    def BIOCSBLEN(self) -> int:
        return iowr("B", 102, 4)

    @property
    def BIOCPROMISC(self) -> int:
        return io("B", 105)

    @property
    def BIOCSETIF(self) -> int:
        return iow("B", 108, self.ifreq)

    @property
    def BIOCIMMEDIATE(self) -> int:
        return iow("B", 112, 4)

    @property
    def FIONBIO(self) -> int:
        return iow("f", 126, 4)


DARWIN = Abi(
    os="darwin", af_inet6=30, af_route=17, ifreq=32, ifaliasreq=64, in6_aliasreq=128, sockaddr_dl=20,
    bpf_hdr=20, bpf_align=4, bpf_timeval=8, rt_msghdr=92, rtm_version=5, rt_flags_at=8, rt_addrs_at=12,
    rt_pid_at=16, rt_seq_at=20, rt_errno_at=24, rt_index_at=4, rt_sa_align=4,
)  # fmt: skip
FREEBSD = Abi(
    os="freebsd", af_inet6=28, af_route=17, ifreq=32, ifaliasreq=68, in6_aliasreq=136, sockaddr_dl=54,
    bpf_hdr=32, bpf_align=8, bpf_timeval=16, rt_msghdr=152, rtm_version=5, rt_flags_at=8, rt_addrs_at=12,
    rt_pid_at=16, rt_seq_at=20, rt_errno_at=24, rt_index_at=4, rt_sa_align=8, aifaddr_num=43,
    aifaddr_in6_num=27,
)  # fmt: skip
OPENBSD = Abi(
    os="openbsd", af_inet6=24, af_route=17, ifreq=32, ifaliasreq=64, in6_aliasreq=128, sockaddr_dl=32,
    bpf_hdr=28, bpf_align=4, bpf_timeval=8, rt_msghdr=96, rtm_version=5, rt_flags_at=16, rt_addrs_at=12,
    rt_pid_at=24, rt_seq_at=28, rt_errno_at=32, rt_index_at=6, rt_sa_align=8, ifcreate_inout=IOC_IN,
    mtu_nums=(126, 127), lladdr_num=31, in6_iff_nodad=None,
)  # fmt: skip
NETBSD = Abi(
    os="netbsd", af_inet6=24, af_route=34, ifreq=144, ifaliasreq=64, in6_aliasreq=128, sockaddr_dl=32,
    bpf_hdr=32, bpf_align=8, bpf_timeval=16, rt_msghdr=120, rtm_version=4, rt_flags_at=8, rt_addrs_at=12,
    rt_pid_at=16, rt_seq_at=20, rt_errno_at=24, rt_index_at=4, rt_sa_align=8, ifcreate_inout=IOC_IN,
    mtu_nums=(126, 127), lladdr_num=None, aifaddr_in6_num=107,
)  # fmt: skip
ABIS = {a.os: a for a in (DARWIN, FREEBSD, OPENBSD, NETBSD)}


# ---- macOS only (xnu-11417.101.15) -------------------------------------------------------------
UTUN_CONTROL_NAME = "com.apple.net.utun_control"  # bsd/net/if_utun.h:51
UTUN_OPT_IFNAME = 2  # if_utun.h:57
SYSPROTO_CONTROL = 2  # bsd/sys/sys_domain.h:45
AF_SYSTEM = 32  # bsd/sys/socket.h:425
AF_NDRV = 27  # socket.h:417
CTLIOCGINFO = iowr("N", 3, 100)  # bsd/sys/kern_control.h:97, struct ctl_info is 100 bytes
SIOCSDRVSPEC = iow("i", 123, 40)  # bsd/sys/sockio.h:166, struct ifdrv (pack 4) is 40 bytes
SIOCGDRVSPEC = iowr("i", 123, 40)  # sockio.h:168
IF_FAKE_S_CMD_SET_PEER = 1  # bsd/net/if_fake_var.h:42-47
IF_FAKE_REQUEST_SIZE = 160  # if_fake_var.h:66-81 (iffr_peer_name at 32)
IF_FAKE_PEER_AT = 32
IFDRV_SIZE = 40
SOCKADDR_NDRV_SIZE = 18  # bsd/net/ndrv.h:42-46
# an AF_NDRV socket's send buffer is 8 KiB (bsd/net/ndrv.c: ndrv_sendspace = NDRVSNDQ) and its
# sends are atomic (a record larger than the buffer is EMSGSIZE, uipc_socket.c sosendcheck):
# a feth TAP raises it to carry the largest frame
SOL_SOCKET = 0xFFFF  # bsd/sys/socket.h (every BSD: not Linux's 1)
SO_SNDBUF = 0x1001  # socket.h (not Linux's 7)
BIOCSHDRCMPLT = iow("B", 117, 4)  # bsd/net/bpf.h:242
BIOCSSEESENT = iow("B", 119, 4)  # bpf.h:244
FETH_CLONE = "feth"  # bsd/net/if_fake.c:140


# ---- FreeBSD, OpenBSD, NetBSD: the tun/tap character devices --------------------------------------
IN6_IFF_TENTATIVE = 0x02  # netinet6/in6_var.h on all three
IN6_IFF_DUPLICATED = 0x04
ND6_IFF_AUTO_LINKLOCAL = 0x20  # FreeBSD netinet6/nd6.h
ND6_IFF_NO_DAD = 0x100
IFLR_ACTIVE = 0x4000  # NetBSD net/if.h: the link-layer address in use
TUN_PTP_MODE = IFF_POINTOPOINT | IFF_MULTICAST  # TUNSIFMODE's argument


@dataclass(frozen=True)
class TunAbi:
    """The tun/tap ioctls of one BSD (numbers built from <net/if_tun.h>, <net/if_tap.h>)."""

    os: str
    abi: Abi
    tunsifhead: int | None  # None: the AF header is always there (OpenBSD) or cannot be set
    tungifhead: int | None
    tunsifmode: int
    gifname: int | None  # TUNGIFNAME/TAPGIFNAME: the interface of an open device fd
    gifname_tun: bool  # whether gifname also answers on a tun fd (FreeBSD) or only on tap
    tun_clone: str | None  # the cloning node that makes a fresh unit, if any
    tap_clone: str | None
    in6_ndireq: int = 72
    in6_ndireq_flags_at: int = 36
    if_laddrreq: int = 280  # NetBSD SIOCALIFADDR's argument
    if_laddrreq_addr_at: int = 24

    @property
    def SIOCSIFNAME(self) -> int:
        return iow("i", 40, self.abi.ifreq)

    @property
    def SIOCGIFINFO_IN6(self) -> int:
        return iowr("i", 108, self.in6_ndireq)

    @property
    def SIOCSIFINFO_IN6(self) -> int:
        return iowr("i", 109, self.in6_ndireq)

    @property
    def SIOCALIFADDR(self) -> int:
        return iow("i", 28, self.if_laddrreq)

    @property
    def SIOCGIFAFLAG_IN6(self) -> int:
        return iowr("i", 73, self.abi.in6_ifreq)


FREEBSD_TUN = TunAbi(
    os="freebsd", abi=FREEBSD, tunsifhead=iow("t", 96, 4), tungifhead=ior("t", 97, 4),
    tunsifmode=iow("t", 94, 4), gifname=ior("t", 93, FREEBSD.ifreq), gifname_tun=True,
    tun_clone="/dev/tun", tap_clone="/dev/tap",
)  # fmt: skip
OPENBSD_TUN = TunAbi(
    os="openbsd", abi=OPENBSD, tunsifhead=None, tungifhead=None, tunsifmode=iow("t", 93, 4),
    gifname=None, gifname_tun=False, tun_clone=None, tap_clone=None,
)  # fmt: skip
NETBSD_TUN = TunAbi(
    os="netbsd", abi=NETBSD, tunsifhead=iow("t", 66, 4), tungifhead=ior("t", 65, 4),
    tunsifmode=iow("t", 88, 4), gifname=ior("e", 0, NETBSD.ifreq), gifname_tun=False,
    tun_clone=None, tap_clone="/dev/tap",
)  # fmt: skip
TUN_ABIS = {t.os: t for t in (FREEBSD_TUN, OPENBSD_TUN, NETBSD_TUN)}


# ---- BPF capture: data-link types and the direction filter -----------------------------------------
BIOCGDLT = ior("B", 106, 4)  # net/bpf.h on all four
DLT_NULL = 0  # 4-byte address family, host byte order (utun, FreeBSD/NetBSD tun)
DLT_EN10MB = 1  # Ethernet (feth, tap)
DLT_LOOP = {"openbsd": 12}  # 4-byte address family, network byte order (OpenBSD tun); 108 elsewhere
DLT_LOOP_DEFAULT = 108
BPF_D_IN, BPF_D_OUT = 0, 2  # FreeBSD/NetBSD BIOCSDIRECTION: see only incoming / only outgoing
BPF_DIRECTION_IN, BPF_DIRECTION_OUT = 1, 2  # OpenBSD BIOCSDIRFILT: the direction to drop


@dataclass(frozen=True)
class BpfDirection:
    """How a BPF descriptor is limited to one direction: the ioctl and its argument for
    incoming-only and (None where the OS cannot) outgoing-only."""

    request: int
    incoming: int
    outgoing: int | None


BPF_DIRECTIONS = {
    "darwin": BpfDirection(BIOCSSEESENT, 0, None),  # BIOCSSEESENT 0: received packets only
    "freebsd": BpfDirection(iow("B", 119, 4), BPF_D_IN, BPF_D_OUT),  # BIOCSDIRECTION
    "netbsd": BpfDirection(iow("B", 121, 4), BPF_D_IN, BPF_D_OUT),  # BIOCSDIRECTION
    "openbsd": BpfDirection(iow("B", 125, 4), BPF_DIRECTION_OUT, BPF_DIRECTION_IN),  # BIOCSDIRFILT
}
