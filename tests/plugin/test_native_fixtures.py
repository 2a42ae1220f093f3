"""The pytest plugin on macOS, the BSDs and Windows (run by their CI jobs as root/Administrator): tun_device and
async_tun_device give a real device in the host's stack with a host peer, capture records it
through BPF, and lab fixtures skip with the reason (no network namespaces there)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pytest_tunlab._environment import is_admin

from tests.support import skip_module_unless
from tunlab.devices._platform import current_platform
from tunlab.testing._packets import parse_udp

NATIVE = ("darwin", "freebsd", "openbsd", "netbsd", "win32")
skip_module_unless(
    current_platform() in NATIVE,
    f"the plugin's macOS/BSD mode; this is {current_platform()} (Linux: tests/plugin/test_pytester.py)",
)
skip_module_unless(is_admin(), "tun_device makes a real interface: run with sudo -E or as Administrator")


def first_udp(read, port: int, deadline: float = 10.0) -> bytes:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        packet = read()
        try:
            if parse_udp(packet).dport == port:
                return packet
        except ValueError:
            continue
    raise AssertionError(f"no UDP datagram to port {port} within {deadline} s")


@pytest.mark.tun_device(ipv4="198.18.2.1/24")
def test_tun_device_is_in_the_host_stack_with_a_host_peer(tun_device, capture) -> None:
    assert tun_device.netns is None
    assert tun_device.peer.kind == "host"
    tun_device.device.set_nonblocking(False)
    if current_platform() == "win32":  # no BPF there: capture says so
        with pytest.raises(Exception, match="capture is not supported on win32"):
            capture(tun_device).start()
        with tun_device.peer.socket() as s:
            s.sendto(b"plugin", ("198.18.2.9", 40010))
            assert parse_udp(first_udp(lambda: tun_device.device.recv(), 40010)).payload == b"plugin"
        return
    with capture(tun_device) as cap, tun_device.peer.socket() as s:
        s.sendto(b"plugin", ("198.18.2.9", 40010))
        packet = first_udp(lambda: tun_device.device.recv(), 40010)
        assert parse_udp(packet).payload == b"plugin"
        time.sleep(0.2)
    sent = [p for p in cap.outgoing() if p.data == packet]
    assert sent, f"the capture did not see the datagram ({len(cap.packets)} packets)"
    assert cap.path is not None and cap.path.stat().st_size > 24


@pytest.mark.tun_device(ipv4="198.18.3.1/24")
def test_async_tun_device(async_tun_device) -> None:
    dev = async_tun_device.device

    async def main() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            asyncio.get_running_loop().call_later(0.1, s.sendto, b"a", ("198.18.3.9", 40011))

            async def first() -> bytes:
                while True:
                    packet = await dev.recv()
                    try:
                        if parse_udp(packet).dport == 40011:
                            return packet
                    except ValueError:
                        continue

            return await asyncio.wait_for(first(), 10)

    assert parse_udp(asyncio.run(main())).payload == b"a"


def test_lab_fixtures_skip_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_lab(netns):
            pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs Linux network namespaces*"])
