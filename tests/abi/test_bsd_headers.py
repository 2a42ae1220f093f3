"""The macOS and BSD backends' numbers against the OSes' real headers (ziglang's bundled SDK and
libc headers), for x86_64 and aarch64: every constant, struct size and offset the backends
use. The few values no bundled header has (macOS private or missing headers) are checked
against the xnu source lines cited in cross-os-abi.md §3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.abi.probe import compile_probe
from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd.abi import ABIS, Abi

COMMON_HEADERS = ["sys/types.h", "sys/socket.h", "sys/time.h", "sys/ioctl.h", "sys/sockio.h", "net/if.h",
                  "net/if_dl.h", "net/route.h", "net/bpf.h", "netinet/in.h"]  # fmt: skip
HEADERS = {
    "darwin": [*COMMON_HEADERS, "sys/kern_control.h", "net/if_utun.h", "net/ndrv.h", "sys/filio.h"],
    "freebsd": [*COMMON_HEADERS, "netinet6/in6_var.h", "sys/filio.h", "net/if_tun.h", "net/if_tap.h"],
    "openbsd": [*COMMON_HEADERS, "netinet6/in6_var.h", "sys/filio.h", "net/if_tun.h"],
    "netbsd": [*COMMON_HEADERS, "netinet6/in6_var.h", "sys/filio.h", "net/if_tun.h", "net/if_tap.h"],
}
TARGET = {"darwin": "macos", "freebsd": "freebsd", "openbsd": "openbsd", "netbsd": "netbsd"}


# label -> (C expression, the backend's value)
def expected(abi: Abi) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {
        "AF_INET6": ("AF_INET6", abi.af_inet6),
        "AF_ROUTE": ("AF_ROUTE", abi.af_route),
        "AF_LINK": ("AF_LINK", A.AF_LINK),
        "IFNAMSIZ": ("IFNAMSIZ", A.IFNAMSIZ),
        "IFF_UP": ("IFF_UP", A.IFF_UP),
        "IFF_BROADCAST": ("IFF_BROADCAST", A.IFF_BROADCAST),
        "IFF_POINTOPOINT": ("IFF_POINTOPOINT", A.IFF_POINTOPOINT),
        "IFF_RUNNING": ("IFF_RUNNING", A.IFF_RUNNING),
        "IFF_MULTICAST": ("IFF_MULTICAST", A.IFF_MULTICAST),
        "sizeof(ifreq)": ("sizeof(struct ifreq)", abi.ifreq),
        "sizeof(ifaliasreq)": ("sizeof(struct ifaliasreq)", abi.ifaliasreq),
        "sizeof(sockaddr_dl)": ("sizeof(struct sockaddr_dl)", abi.sockaddr_dl),
        "sizeof(sockaddr_in)": ("sizeof(struct sockaddr_in)", 16),
        "sizeof(sockaddr_in6)": ("sizeof(struct sockaddr_in6)", 28),
        "sizeof(bpf_hdr)": ("sizeof(struct bpf_hdr)", abi.bpf_hdr),
        "bpf_hdr.bh_caplen": ("offsetof(struct bpf_hdr, bh_caplen)", abi.bpf_timeval),
        "bpf_hdr.bh_hdrlen": ("offsetof(struct bpf_hdr, bh_hdrlen)", abi.bpf_timeval + 8),
        "BPF_ALIGNMENT": ("BPF_ALIGNMENT", abi.bpf_align),
        "sizeof(rt_msghdr)": ("sizeof(struct rt_msghdr)", abi.rt_msghdr),
        "rt_msghdr.rtm_flags": ("offsetof(struct rt_msghdr, rtm_flags)", abi.rt_flags_at),
        "rt_msghdr.rtm_addrs": ("offsetof(struct rt_msghdr, rtm_addrs)", abi.rt_addrs_at),
        "rt_msghdr.rtm_pid": ("offsetof(struct rt_msghdr, rtm_pid)", abi.rt_pid_at),
        "rt_msghdr.rtm_seq": ("offsetof(struct rt_msghdr, rtm_seq)", abi.rt_seq_at),
        "rt_msghdr.rtm_errno": ("offsetof(struct rt_msghdr, rtm_errno)", abi.rt_errno_at),
        "rt_msghdr.rtm_index": ("offsetof(struct rt_msghdr, rtm_index)", abi.rt_index_at),
        "RTM_VERSION": ("RTM_VERSION", abi.rtm_version),
        "RTM_ADD": ("RTM_ADD", A.RTM_ADD),
        "RTM_DELETE": ("RTM_DELETE", A.RTM_DELETE),
        "RTF_UP": ("RTF_UP", A.RTF_UP),
        "RTF_STATIC": ("RTF_STATIC", A.RTF_STATIC),
        "RTA_DST": ("RTA_DST", A.RTA_DST),
        "RTA_GATEWAY": ("RTA_GATEWAY", A.RTA_GATEWAY),
        "RTA_NETMASK": ("RTA_NETMASK", A.RTA_NETMASK),
        "SIOCSIFFLAGS": ("SIOCSIFFLAGS", abi.SIOCSIFFLAGS),
        "SIOCGIFFLAGS": ("SIOCGIFFLAGS", abi.SIOCGIFFLAGS),
        "SIOCDIFADDR": ("SIOCDIFADDR", abi.SIOCDIFADDR),
        "SIOCAIFADDR": ("SIOCAIFADDR", abi.SIOCAIFADDR),
        "SIOCGIFMTU": ("SIOCGIFMTU", abi.SIOCGIFMTU),
        "SIOCSIFMTU": ("SIOCSIFMTU", abi.SIOCSIFMTU),
        "SIOCSIFLLADDR": ("SIOCSIFLLADDR", abi.SIOCSIFLLADDR),
        "SIOCIFCREATE": ("SIOCIFCREATE", abi.SIOCIFCREATE),
        "SIOCIFDESTROY": ("SIOCIFDESTROY", abi.SIOCIFDESTROY),
        "BIOCGBLEN": ("BIOCGBLEN", abi.BIOCGBLEN),
        "BIOCSBLEN": ("BIOCSBLEN", abi.BIOCSBLEN),
        "BIOCPROMISC": ("BIOCPROMISC", abi.BIOCPROMISC),
        "BIOCSETIF": ("BIOCSETIF", abi.BIOCSETIF),
        "BIOCIMMEDIATE": ("BIOCIMMEDIATE", abi.BIOCIMMEDIATE),
        "FIONBIO": ("FIONBIO", abi.FIONBIO),
        "BIOCGDLT": ("BIOCGDLT", A.BIOCGDLT),
        "DLT_NULL": ("DLT_NULL", A.DLT_NULL),
        "DLT_EN10MB": ("DLT_EN10MB", A.DLT_EN10MB),
        "DLT_LOOP": ("DLT_LOOP", A.DLT_LOOP.get(abi.os, A.DLT_LOOP_DEFAULT)),
    }
    direction = A.BPF_DIRECTIONS[abi.os]
    if abi.os in ("freebsd", "netbsd"):
        out["BIOCSDIRECTION"] = ("BIOCSDIRECTION", direction.request)
        out["BPF_D_IN"] = ("(int)BPF_D_IN", direction.incoming)  # an enum on FreeBSD: not #ifdef-able
        out["BPF_D_OUT"] = ("(int)BPF_D_OUT", direction.outgoing)
    elif abi.os == "openbsd":
        out["BIOCSDIRFILT"] = ("BIOCSDIRFILT", direction.request)
        out["BPF_DIRECTION_OUT"] = ("BPF_DIRECTION_OUT", direction.incoming)  # drop sent: see received
        out["BPF_DIRECTION_IN"] = ("BPF_DIRECTION_IN", direction.outgoing)
    else:
        out["BIOCSSEESENT (incoming only)"] = ("BIOCSSEESENT", direction.request)
    if abi.os == "darwin":
        out.update(
            {
                "CTLIOCGINFO": ("CTLIOCGINFO", A.CTLIOCGINFO),
                "sizeof(ctl_info)": ("sizeof(struct ctl_info)", 100),
                "sizeof(sockaddr_ctl)": ("sizeof(struct sockaddr_ctl)", 32),
                "UTUN_OPT_IFNAME": ("UTUN_OPT_IFNAME", A.UTUN_OPT_IFNAME),
                "AF_SYSTEM": ("AF_SYSTEM", A.AF_SYSTEM),
                "AF_NDRV": ("AF_NDRV", A.AF_NDRV),
                "SIOCSDRVSPEC": ("SIOCSDRVSPEC", A.SIOCSDRVSPEC),
                "SIOCGDRVSPEC": ("SIOCGDRVSPEC", A.SIOCGDRVSPEC),
                "sizeof(ifdrv)": ("sizeof(struct ifdrv)", A.IFDRV_SIZE),
                "ifdrv.ifd_cmd": ("offsetof(struct ifdrv, ifd_cmd)", 16),
                "ifdrv.ifd_len": ("offsetof(struct ifdrv, ifd_len)", 24),
                "ifdrv.ifd_data": ("offsetof(struct ifdrv, ifd_data)", 32),
                "sizeof(sockaddr_ndrv)": ("sizeof(struct sockaddr_ndrv)", A.SOCKADDR_NDRV_SIZE),
                "SOL_SOCKET": ("SOL_SOCKET", A.SOL_SOCKET),
                "SO_SNDBUF": ("SO_SNDBUF", A.SO_SNDBUF),
                "BIOCSHDRCMPLT": ("BIOCSHDRCMPLT", A.BIOCSHDRCMPLT),
                "BIOCSSEESENT": ("BIOCSSEESENT", A.BIOCSSEESENT),
            }
        )
    else:
        out.update(
            {
                "sizeof(in6_aliasreq)": ("sizeof(struct in6_aliasreq)", abi.in6_aliasreq),
                "in6_aliasreq.ifra_flags": (
                    "offsetof(struct in6_aliasreq, ifra_flags)",
                    abi.in6_aliasreq_flags_at,
                ),
                "in6_aliasreq.ifra_lifetime": (
                    "offsetof(struct in6_aliasreq, ifra_lifetime)",
                    abi.in6_aliasreq_lifetime_at,
                ),
                "sizeof(in6_ifreq)": ("sizeof(struct in6_ifreq)", abi.in6_ifreq),
                "SIOCAIFADDR_IN6": ("SIOCAIFADDR_IN6", abi.SIOCAIFADDR_IN6),
                "SIOCDIFADDR_IN6": ("SIOCDIFADDR_IN6", abi.SIOCDIFADDR_IN6),
                "IN6_IFF_NODAD": ("IN6_IFF_NODAD", abi.in6_iff_nodad),
                "ND6_INFINITE_LIFETIME": ("ND6_INFINITE_LIFETIME", A.ND6_INFINITE_LIFETIME),
            }
        )
        out.update(tun_expected(A.TUN_ABIS[abi.os]))
    return out


def tun_expected(t: A.TunAbi) -> dict[str, tuple[str, int | None]]:
    """The tun/tap numbers the FreeBSD, OpenBSD and NetBSD backends use."""
    out: dict[str, tuple[str, int | None]] = {
        "TUNSIFMODE": ("TUNSIFMODE", t.tunsifmode),
        "TUNSIFHEAD": ("TUNSIFHEAD", t.tunsifhead),  # undefined on OpenBSD: None both sides
        "TUNGIFHEAD": ("TUNGIFHEAD", t.tungifhead),
        "SIOCGIFAFLAG_IN6": ("SIOCGIFAFLAG_IN6", t.SIOCGIFAFLAG_IN6),
        "IN6_IFF_TENTATIVE": ("IN6_IFF_TENTATIVE", A.IN6_IFF_TENTATIVE),
        "IN6_IFF_DUPLICATED": ("IN6_IFF_DUPLICATED", A.IN6_IFF_DUPLICATED),
        "in6_ifreq.ifr_ifru": ("offsetof(struct in6_ifreq, ifr_ifru)", 16),
        "IFF_POINTOPOINT|IFF_MULTICAST": ("IFF_POINTOPOINT | IFF_MULTICAST", A.TUN_PTP_MODE),
    }
    if t.os == "freebsd":
        out.update(
            {
                "TUNGIFNAME": ("TUNGIFNAME", t.gifname),
                "TAPGIFNAME": ("TAPGIFNAME", t.gifname),
                "SIOCSIFNAME": ("SIOCSIFNAME", t.SIOCSIFNAME),
                "SIOCGIFINFO_IN6": ("SIOCGIFINFO_IN6", t.SIOCGIFINFO_IN6),
                "SIOCSIFINFO_IN6": ("SIOCSIFINFO_IN6", t.SIOCSIFINFO_IN6),
                "sizeof(in6_ndireq)": ("sizeof(struct in6_ndireq)", t.in6_ndireq),
                "in6_ndireq.ndi.flags": ("offsetof(struct in6_ndireq, ndi.flags)", t.in6_ndireq_flags_at),
                "ND6_IFF_NO_DAD": ("ND6_IFF_NO_DAD", A.ND6_IFF_NO_DAD),
                "ND6_IFF_AUTO_LINKLOCAL": ("ND6_IFF_AUTO_LINKLOCAL", A.ND6_IFF_AUTO_LINKLOCAL),
            }
        )
    if t.os == "netbsd":
        out.update(
            {
                "TAPGIFNAME": ("TAPGIFNAME", t.gifname),
                "SIOCALIFADDR": ("SIOCALIFADDR", t.SIOCALIFADDR),
                "sizeof(if_laddrreq)": ("sizeof(struct if_laddrreq)", t.if_laddrreq),
                "if_laddrreq.addr": ("offsetof(struct if_laddrreq, addr)", t.if_laddrreq_addr_at),
                "if_laddrreq.flags": ("offsetof(struct if_laddrreq, flags)", 16),
                "IFLR_ACTIVE": ("IFLR_ACTIVE", A.IFLR_ACTIVE),
            }
        )
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abi")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("os_name", ["darwin", "freebsd", "openbsd", "netbsd"])
def test_the_backends_numbers_are_the_headers_numbers(os_name: str, arch: str, workdir: Path) -> None:
    abi = ABIS[os_name]
    want = expected(abi)
    prelude = "#include <netinet6/nd6.h>\n" if os_name in ("freebsd", "netbsd", "openbsd") else ""
    got = compile_probe(f"{arch}-{TARGET[os_name]}", HEADERS[os_name], {k: v[0] for k, v in want.items()},
                        workdir, prelude)  # fmt: skip
    wrong = {k: (f"headers {got[k]!r}", f"tunlab {v[1]!r}") for k, v in want.items() if got[k] != v[1]}
    assert not wrong, f"{os_name}/{arch}: " + "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in wrong.items())


def test_macos_values_no_bundled_header_has_match_the_xnu_sources() -> None:
    """in6_var.h, sys_domain.h and if_fake_var.h are not in the SDK headers ziglang ships: the
    values below are xnu-11417.101.15's (cross-os-abi.md §3.1-3.2 cites each line)."""
    d = A.DARWIN
    assert d.in6_aliasreq == 128  # bsd/netinet6/in6_var.h:402-409
    assert (d.in6_aliasreq_flags_at, d.in6_aliasreq_lifetime_at) == (100, 104)
    assert d.in6_ifreq == 288  # in6_var.h:385-400 (the icmp6_ifstat union member)
    assert d.SIOCAIFADDR_IN6 == 0x8080691A  # in6_var.h:632
    assert d.SIOCDIFADDR_IN6 == 0x81206919  # in6_var.h:631
    assert d.in6_iff_nodad == 0x20  # in6_var.h:821
    assert A.SYSPROTO_CONTROL == 2  # bsd/sys/sys_domain.h:45
    assert A.IF_FAKE_S_CMD_SET_PEER == 1  # bsd/net/if_fake_var.h:42-47
    assert (A.IF_FAKE_REQUEST_SIZE, A.IF_FAKE_PEER_AT) == (160, 32)  # if_fake_var.h:66-81
    assert A.UTUN_CONTROL_NAME == "com.apple.net.utun_control"  # bsd/net/if_utun.h:51
