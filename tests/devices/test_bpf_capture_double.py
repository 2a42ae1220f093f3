"""tunlab.testing._capture on macOS and the BSDs (BPF, one descriptor per direction) driven
through the syscall double: the ioctls each OS needs, records walked by their own header
length, the 4-byte address family dropped from TUN packets, direction, pcap out, and the
descriptors closed when it stops or fails to start."""

from __future__ import annotations

import errno
import socket
import struct
import time

import pytest

from tests.devices.bsd_double import FakeKernel, RecordingSystem
from tunlab.devices._bsd import abi as A
from tunlab.devices._bsd import wire
from tunlab.testing import _capture as capture_mod
from tunlab.testing._capture import Capture
from tunlab.testing._packets import udp_packet

PACKET = udp_packet(
    *map(__import__("ipaddress").ip_address, ("198.18.0.1", "198.18.0.2")), 5000, 6000, b"bpf"
)
REPLY = udp_packet(
    *map(__import__("ipaddress").ip_address, ("198.18.0.2", "198.18.0.1")), 6000, 5000, b"back"
)


@pytest.fixture
def bpf(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> RecordingSystem:
    os_name, dlt = request.param
    sys = RecordingSystem(A.ABIS[os_name], FakeKernel(busy_bpf=set(), dlt=dlt))
    monkeypatch.setattr(capture_mod, "NATIVE_BPF", True)
    monkeypatch.setattr(capture_mod, "bpf_system", lambda: sys)
    return sys


def af_header(abi: A.Abi, dlt: int) -> bytes:
    family = socket.AF_INET
    return struct.pack("!I" if dlt == A.DLT_LOOP.get(abi.os) else "=I", family)


def bpf_fds(sys: RecordingSystem) -> list[int]:
    return [c.fd for c in sys.calls if c.name == "ioctl" and c.args[0] == sys.abi.BIOCSETIF]


def direction_settings(sys: RecordingSystem) -> list[tuple[int, int]]:
    d = A.BPF_DIRECTIONS[sys.abi.os]
    return [(c.args[0], struct.unpack("I", c.data)[0]) for c in sys.ioctls(d.request)]


TUN_CASES = [("darwin", A.DLT_NULL), ("freebsd", A.DLT_NULL), ("netbsd", A.DLT_NULL), ("openbsd", 12)]


@pytest.mark.parametrize("bpf", TUN_CASES, indirect=True, ids=[c[0] for c in TUN_CASES])
def test_a_tun_capture_sees_both_directions_as_bare_ip_and_writes_pcap(
    bpf: RecordingSystem, tmp_path
) -> None:
    sys = bpf
    abi = sys.abi
    d = A.BPF_DIRECTIONS[abi.os]
    path = tmp_path / "tun.pcap"
    with Capture(None, "tun0", path) as cap:
        fds = bpf_fds(sys)
        assert len(fds) == 2
        head = af_header(abi, sys.kernel.dlt)
        incoming, other = fds
        # one read can return several records, each BPF_WORDALIGN-aligned
        sys.deliver(incoming, wire.bpf_record(abi, head + REPLY) + wire.bpf_record(abi, head + REPLY))
        if d.outgoing is None:  # macOS: the second descriptor sees everything
            sys.deliver(other, wire.bpf_record(abi, head + REPLY) + wire.bpf_record(abi, head + PACKET))
            sys.deliver(other, wire.bpf_record(abi, head + REPLY))
        else:
            sys.deliver(other, wire.bpf_record(abi, head + PACKET))
        time.sleep(0.2)
    assert sorted((p.outgoing, p.data) for p in cap.packets) == [
        (False, REPLY),
        (False, REPLY),
        (True, PACKET),
    ]
    assert all(not p.l2 for p in cap.packets)
    # the direction each descriptor was limited to, set before BIOCSETIF
    expect = [(d.request, d.incoming)] + ([] if d.outgoing is None else [(d.request, d.outgoing)])
    assert direction_settings(sys) == expect
    names = [c.args[0] for c in sys.calls if c.name == "ioctl"]
    assert names.index(abi.BIOCSBLEN) < names.index(abi.BIOCSETIF)
    assert names.index(d.request) < names.index(abi.BIOCSETIF)
    assert not sys.open_fds, "BPF descriptors left open"
    raw = path.read_bytes()
    magic, _major, _minor, _tz, _sig, _snap, link = struct.unpack_from("<IHHiIII", raw)
    assert (magic, link) == (0xA1B2C3D4, 101)  # LINKTYPE_RAW: the AF word is not in the file
    assert raw[24 + 16 : 24 + 16 + len(REPLY)] == REPLY


@pytest.mark.parametrize("bpf", [("freebsd", A.DLT_EN10MB)], indirect=True)
def test_a_tap_capture_keeps_ethernet_frames(bpf: RecordingSystem) -> None:
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + PACKET
    with Capture(None, "tap0") as cap:
        bpf.deliver(bpf_fds(bpf)[1], wire.bpf_record(bpf.abi, frame))
        time.sleep(0.2)
    [pkt] = cap.packets
    assert (pkt.l2, pkt.outgoing, pkt.data, pkt.ip) == (True, True, frame, PACKET)


@pytest.mark.parametrize("bpf", [("netbsd", A.DLT_NULL)], indirect=True)
def test_the_cloning_node_is_tried_first_then_the_first_free_bpfN(bpf: RecordingSystem) -> None:
    bpf.kernel.no_bpf_clone = True
    with Capture(None, "tun0"):
        pass
    assert [c.args[0] for c in bpf.calls if c.name == "open"] == [
        "/dev/bpf",
        "/dev/bpf0",
        "/dev/bpf",
        "/dev/bpf0",  # busy: the first descriptor has it
        "/dev/bpf1",
    ]
    assert not bpf.open_fds


@pytest.mark.parametrize("bpf", [("openbsd", 12)], indirect=True)
def test_a_failure_to_attach_the_second_descriptor_closes_the_first(bpf: RecordingSystem) -> None:
    setif = bpf.abi.BIOCSETIF
    seen: list[int] = []

    def second_setif(call) -> bool:
        if call.name == "ioctl" and call.args[0] == setif:
            seen.append(1)
            return len(seen) == 2
        return False

    bpf.fail_at(second_setif, errno.ENXIO)
    with pytest.raises(Exception, match="BPF on tun0"):
        Capture(None, "tun0").start()
    assert not bpf.open_fds


@pytest.mark.parametrize("bpf", [("darwin", 0)], indirect=True)
def test_an_unknown_data_link_type_is_refused_clearly(bpf: RecordingSystem) -> None:
    bpf.kernel.dlt = 147
    with pytest.raises(Exception, match="data-link type 147"):
        Capture(None, "utun4").start()
    assert not bpf.open_fds


def test_linux_needs_the_namespace() -> None:
    with pytest.raises(ValueError, match="name the namespace of 'tun0'"):
        Capture(None, "tun0")
