"""Every builder option is validated before any syscall; errors name the option."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from tunlab import DeviceBuilder, Layer
from tunlab.errors import UnsupportedOperationError


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda b: b.name("a" * 16), ValueError, ["name", "longer than 15 bytes"]),
        (lambda b: b.name(""), ValueError, ["name", "empty"]),
        (lambda b: b.name("a/b"), ValueError, ["name", "'/'"]),
        (lambda b: b.name(5), TypeError, ["name", "str"]),
        (lambda b: b.layer("L2"), TypeError, ["layer"]),
        (lambda b: b.ipv4("300.1.1.1", 24), ValueError, ["ipv4 address", "300.1.1.1"]),
        (lambda b: b.ipv4("198.18.0.1", 33), ValueError, ["ipv4 mask", "0..32"]),
        (lambda b: b.ipv4("198.18.0.1", "255.0.255.0"), ValueError, ["ipv4 mask", "netmask"]),
        (lambda b: b.ipv4("198.18.0.1", 24, "x"), ValueError, ["ipv4 destination"]),
        (lambda b: b.ipv4("2001:db8::1", 24), ValueError, ["ipv4 address"]),
        (lambda b: b.ipv6("198.18.0.1", 64), ValueError, ["ipv6 address"]),
        (lambda b: b.ipv6("2001:db8::1", 129), ValueError, ["ipv6 prefix", "0..128"]),
        (lambda b: b.ipv6("2001:db8::1", True), TypeError, ["ipv6 prefix"]),
        (lambda b: b.mtu(67), ValueError, ["mtu", "68..65535"]),
        (lambda b: b.mtu(70000), ValueError, ["mtu"]),
        (lambda b: b.mtu("1500"), TypeError, ["mtu", "int"]),
        (lambda b: b.mac_addr("01:00:00:00:00:01"), ValueError, ["mac_addr", "multicast"]),
        (lambda b: b.mac_addr("zz:00:00:00:00:01"), ValueError, ["mac_addr"]),
        (lambda b: b.mac_addr(b"\x02\x00"), ValueError, ["mac_addr", "6 bytes"]),
        (lambda b: b.packet_information(1), TypeError, ["packet_information"]),
        (lambda b: b.offload("yes"), TypeError, ["offload"]),
        (lambda b: b.multi_queue(None), TypeError, ["multi_queue"]),
        (lambda b: b.enable("up"), TypeError, ["enable"]),
        (lambda b: b.tx_queue_len(-1), ValueError, ["tx_queue_len"]),
        (lambda b: b.persist(0), TypeError, ["persist"]),
        (lambda b: b.owner(-5), ValueError, ["owner"]),
        (lambda b: b.group("wheel"), TypeError, ["group"]),
        (lambda b: b.netns(""), ValueError, ["netns"]),
        (lambda b: b.netns(3.5), TypeError, ["netns"]),
    ],
)
def test_bad_option_names_the_option(call, exc, words) -> None:
    with pytest.raises(exc) as info:  # the in-memory backend: Unix name rules on any OS
        call(DeviceBuilder().backend("memory"))
    for word in words:
        assert word in str(info.value)


def test_duplicate_addresses_are_rejected() -> None:
    b = DeviceBuilder().ipv4("198.18.0.1", 24)
    with pytest.raises(ValueError, match="given twice"):
        b.ipv4("198.18.0.1", 16)
    b.ipv6("2001:db8::1", 64)
    with pytest.raises(ValueError, match="given twice"):
        b.ipv6("2001:db8::1", 64)


def test_mac_needs_tap_checked_before_creation() -> None:
    with pytest.raises(ValueError, match="only TAP devices have a MAC"):
        DeviceBuilder().mac_addr("02:00:00:00:00:01").build_sync()


def test_masks_in_every_form_and_chaining() -> None:
    b = (
        DeviceBuilder()
        .name("tun7")
        .layer(Layer.L2)
        .ipv4("198.18.0.1", "255.255.255.0")
        .ipv4(ipaddress.IPv4Address("198.18.1.1"), 30, "198.18.1.2")
        .ipv4("198.18.2.1", "16")
        .ipv6("2001:db8::1", 64)
        .ipv6("fd00::1", "48")
        .mac_addr(b"\x02\x00\x5e\x00\x53\x01")
    )
    cfg = b.config
    assert [str(s.interface) for s in cfg.ipv4] == [
        "198.18.0.1/24",
        "198.18.1.1/30",
        "198.18.2.1/16",
    ]
    assert cfg.ipv4[1].destination == ipaddress.IPv4Address("198.18.1.2")
    assert [str(i) for i in cfg.ipv6] == ["2001:db8::1/64", "fd00::1/48"]
    assert cfg.mac == "02:00:5e:00:53:01"
    assert cfg.enabled is True
    assert b.inherit_enable_state().config.enabled is None


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux backend's capabilities (it imports fcntl)")
@pytest.mark.parametrize(
    "option",
    [
        lambda b: b.ring_capacity(1 << 20),
        lambda b: b.tunnel_type("x"),
        lambda b: b.guid("{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"),
        lambda b: b.wintun_dll("C:/wintun.dll"),
    ],
)
def test_windows_only_options_are_refused_before_creation_on_linux(option) -> None:
    """The Linux backend claimed every capability, so Wintun's options passed check() there."""
    with pytest.raises(UnsupportedOperationError, match="capability 'wintun'.*leave these options out"):
        option(DeviceBuilder().backend("linux")).check()
