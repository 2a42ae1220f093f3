"""Builder options and configuration methods, each checked against netlink's own view."""

from __future__ import annotations

import ipaddress
import os

import pytest

from tests.support import link_info, link_names, require_tool
from tunlab import BorrowedSyncDevice, DeviceBuilder, Layer, SyncDevice

pytestmark = pytest.mark.root

IFF_UP = 0x1


def test_every_builder_option_on_a_tap(ns) -> None:
    dev = (
        DeviceBuilder()
        .name("tapall")
        .layer(Layer.L2)
        .ipv4("198.18.10.1", "255.255.255.0")
        .ipv4("198.18.11.1", 30)
        .ipv6("2001:db8:10::1", 64)
        .ipv6("fd00:10::1", 48)
        .mtu(1400)
        .mac_addr("02:00:5e:00:53:20")
        .packet_information(True)
        .offload(True)
        .multi_queue(True)
        .enable(True)
        .tx_queue_len(321)
        .owner(1000)
        .group(100)
        .netns(ns.name)
        .build_sync()
    )
    with dev:
        info = link_info(ns, "tapall")
        assert info["mtu"] == 1400
        assert info["txqlen"] == 321
        assert info["mac"] == "02:00:5e:00:53:20"
        assert info["flags"] & IFF_UP
        for a in ("198.18.10.1/24", "198.18.11.1/30", "2001:db8:10::1/64", "fd00:10::1/48"):
            assert a in info["addresses"]
        tun = info["tun"]
        assert tun["IFLA_TUN_TYPE"] == 2  # IFF_TAP
        assert tun["IFLA_TUN_PI"] == 1
        assert tun["IFLA_TUN_VNET_HDR"] == 1
        assert tun["IFLA_TUN_MULTI_QUEUE"] == 1
        assert tun["IFLA_TUN_OWNER"] == 1000
        assert tun["IFLA_TUN_GROUP"] == 100
        assert tun["IFLA_TUN_PERSIST"] == 0
        assert dev.tcp_gso and dev.packet_information and dev.multi_queue
        assert dev.layer is Layer.L2
        # addresses() reports the same set, as ipaddress objects
        mine = {str(a) for a in dev.addresses()}
        assert {"198.18.10.1/24", "2001:db8:10::1/64"} <= mine
        assert all(isinstance(a, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)) for a in dev.addresses())
    assert "tapall" not in link_names(ns)


def test_enable_false_and_inherit_leave_the_link_down(ns) -> None:
    with DeviceBuilder().name("tdown").enable(False).netns(ns.name).build_sync() as dev:
        assert not link_info(ns, "tdown")["flags"] & IFF_UP
        assert not dev.is_running
        dev.enabled(True)
        assert dev.is_running
        dev.enabled(False)
        assert not dev.is_running
    with DeviceBuilder().name("tinh").inherit_enable_state().netns(ns.name).build_sync():
        assert not link_info(ns, "tinh")["flags"] & IFF_UP


def test_point_to_point_destination(ns) -> None:
    with DeviceBuilder().name("tp2p").ipv4("198.18.12.1", 32, "198.18.12.2").netns(ns.name).build_sync():
        with ns.iproute() as ipr:
            idx = ipr.link_lookup(ifname="tp2p")[0]
            addr = ipr.get_addr(index=idx, family=2)[0]
            assert addr.get_attr("IFA_LOCAL") == "198.18.12.1"
            assert addr.get_attr("IFA_ADDRESS") == "198.18.12.2"


def test_configuration_round_trips(ns) -> None:
    with DeviceBuilder().name("tcfg").layer(Layer.L2).netns(ns.name).build_sync() as dev:
        dev.set_mtu(9000)
        assert dev.mtu == 9000 == link_info(ns, "tcfg")["mtu"]
        dev.set_tx_queue_len(42)
        assert dev.tx_queue_len == 42 == link_info(ns, "tcfg")["txqlen"]
        dev.set_mac_address("02:00:5e:00:53:30")
        assert dev.mac_address == "02:00:5e:00:53:30" == link_info(ns, "tcfg")["mac"]
        dev.set_mac_address(b"\x02\x00\x5e\x00\x53\x31")
        assert link_info(ns, "tcfg")["mac"] == "02:00:5e:00:53:31"

        dev.add_address_v4("198.18.13.1", 24)
        dev.add_address_v4("198.18.14.1", "255.255.0.0")
        dev.add_address_v6("2001:db8:13::1", 64)
        assert {"198.18.13.1/24", "198.18.14.1/16", "2001:db8:13::1/64"} <= set(
            link_info(ns, "tcfg")["addresses"]
        )
        assert dev.broadcast == ipaddress.IPv4Address("198.18.13.255")
        dev.set_broadcast("198.18.13.254")
        assert dev.broadcast == ipaddress.IPv4Address("198.18.13.254")
        dev.remove_address("198.18.14.1")
        dev.remove_address(ipaddress.IPv6Address("2001:db8:13::1"))
        now = set(link_info(ns, "tcfg")["addresses"])
        assert "198.18.14.1/16" not in now and "2001:db8:13::1/64" not in now
        assert "198.18.13.1/24" in now

        index = dev.if_index
        dev.enabled(True)
        dev.set_name("trenamed")
        assert dev.name == "trenamed"
        assert link_info(ns, "trenamed")["index"] == index
        assert link_info(ns, "trenamed")["flags"] & IFF_UP  # state kept across the rename
        assert "tcfg" not in link_names(ns)


def test_config_follows_the_interface_into_another_namespace(ns, needs_root) -> None:
    from tests.support import unique_name
    from tunlab._linux.netns import NetNamespace

    other = NetNamespace.create(unique_name())
    try:
        with DeviceBuilder().name("tmove").netns(ns.name).build_sync() as dev:
            with ns.iproute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="tmove")[0], net_ns_fd=other.path)
            dev.set_mtu(1300)
            assert link_info(other, "tmove")["mtu"] == 1300
            assert dev.netns() == other
    finally:
        other.delete()


def test_persist_outlives_the_fd_then_is_removed(ns) -> None:
    dev = DeviceBuilder().name("tpers").persist(True).netns(ns.name).build_sync()
    assert dev.is_persistent
    dev.close()
    assert link_info(ns, "tpers")["tun"]["IFLA_TUN_PERSIST"] == 1
    again = DeviceBuilder().name("tpers").inherit_enable_state().netns(ns.name).build_sync()
    assert again.is_persistent
    again.persist(False)
    again.close()
    assert "tpers" not in link_names(ns)


def _tso(ns, name: str) -> str:
    require_tool("ethtool")
    out = ns.run(["ethtool", "-k", name], check=True).stdout.decode()
    line = next(x for x in out.splitlines() if x.startswith("tcp-segmentation-offload:"))
    return line.split(":", 1)[1].split()[0]


def test_offload_false_clears_a_stale_mask_on_a_persistent_device(ns) -> None:
    dev = DeviceBuilder().name("tmask").offload(True).persist(True).netns(ns.name).build_sync()
    assert dev.tcp_gso
    dev.close()
    assert _tso(ns, "tmask") == "on"
    again = DeviceBuilder().name("tmask").offload(False).inherit_enable_state().netns(ns.name).build_sync()
    try:
        assert not again.tcp_gso
        assert _tso(ns, "tmask") == "off"
    finally:
        again.persist(False)
        again.close()
    assert "tmask" not in link_names(ns)


def test_from_fd_takes_ownership_and_into_fd_gives_it_back(ns) -> None:
    dev = DeviceBuilder().name("tfd").ipv4("198.18.15.1", 24).netns(ns.name).build_sync()
    fd = dev.into_fd()
    assert dev.closed
    os.fstat(fd)  # still open
    owned = SyncDevice.from_fd(fd)
    assert owned.name == "tfd"
    assert owned.layer is Layer.L3
    assert not owned.tcp_gso
    assert "198.18.15.1/24" in {str(a) for a in owned.addresses()}
    owned.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert "tfd" not in link_names(ns)


def test_borrow_raw_never_closes(ns) -> None:
    dev = DeviceBuilder().name("tbor").layer(Layer.L2).offload(True).netns(ns.name).build_sync()
    try:
        borrowed = BorrowedSyncDevice.borrow_raw(dev.fileno())
        assert borrowed.name == "tbor"
        assert borrowed.layer is Layer.L2
        assert borrowed.tcp_gso  # detected from the fd's flags
        borrowed.close()
        os.fstat(dev.fileno())
        assert dev.name == "tbor"
        with pytest.raises(TypeError):
            BorrowedSyncDevice.from_fd(dev.fileno())
    finally:
        dev.close()


def test_nonblocking_toggle(quiet_ns) -> None:
    ns = quiet_ns
    with DeviceBuilder().name("tnb").netns(ns.name).build_sync() as dev:
        assert not dev.is_nonblocking
        dev.set_nonblocking(True)
        assert dev.is_nonblocking
        with pytest.raises(BlockingIOError):
            dev.recv()
        dev.set_nonblocking(False)
        assert not dev.is_nonblocking


def test_kernel_chosen_name(ns) -> None:
    with DeviceBuilder().layer(Layer.L2).netns(ns.name).build_sync() as dev:
        assert dev.name.startswith("tap")
        assert dev.name in link_names(ns)


def test_set_network_address_replaces_ipv4_only(ns) -> None:
    dev = (
        DeviceBuilder()
        .name("tnet")
        .ipv4("198.18.16.1", 24)
        .ipv4("198.18.17.1", 24)
        .ipv6("2001:db8:16::1", 64)
    )
    with dev.netns(ns.name).build_sync() as d:
        d.set_network_address("198.18.18.1", "255.255.255.252", "198.18.18.2")
        addrs = link_info(ns, "tnet")["addresses"]
        assert "198.18.18.1/30" in addrs
        assert "2001:db8:16::1/64" in addrs
        assert not any(a.startswith(("198.18.16.", "198.18.17.")) for a in addrs)
        with pytest.raises(ValueError, match="set_network_address mask"):
            d.set_network_address("198.18.19.1", "255.0.255.0")
        assert "198.18.18.1/30" in link_info(ns, "tnet")["addresses"]  # nothing removed


def test_owner_and_group_after_creation(ns) -> None:
    with DeviceBuilder().name("town").netns(ns.name).build_sync() as d:
        d.set_owner(1234)
        d.set_group(4321)
        tun = link_info(ns, "town")["tun"]
        assert (tun["IFLA_TUN_OWNER"], tun["IFLA_TUN_GROUP"]) == (1234, 4321)
