"""struct virtio_net_hdr layout and the Internet checksum, both engines."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from tunlab import devices
from tunlab.devices import offload
from tunlab.devices.offload import VirtioNetHdr, checksum, ones_sum, pseudo_header_sum


def test_constants_match_linux_virtio_net_h() -> None:
    assert offload.VIRTIO_NET_HDR_LEN == 10
    assert offload.IDEAL_BATCH_SIZE == 128
    assert offload.VIRTIO_NET_HDR_F_NEEDS_CSUM == 1
    assert offload.VIRTIO_NET_HDR_GSO_NONE == 0
    assert offload.VIRTIO_NET_HDR_GSO_TCPV4 == 1
    assert offload.VIRTIO_NET_HDR_GSO_UDP == 3
    assert offload.VIRTIO_NET_HDR_GSO_TCPV6 == 4
    assert offload.VIRTIO_NET_HDR_GSO_UDP_L4 == 5
    assert offload.VIRTIO_NET_HDR_GSO_ECN == 0x80
    # re-exported from tunlab.devices
    assert devices.VIRTIO_NET_HDR_LEN == 10
    assert devices.GROTable is offload.GROTable


def test_header_layout_is_native_endian_10_bytes() -> None:
    hdr = VirtioNetHdr(
        flags=1, gso_type=1, hdr_len=0x0102, gso_size=0x0304, csum_start=0x0506, csum_offset=0x0708
    )
    raw = hdr.encode()
    assert len(raw) == 10
    order = "<" if sys.byteorder == "little" else ">"
    assert raw == struct.pack(order + "BBHHHH", 1, 1, 0x0102, 0x0304, 0x0506, 0x0708)
    assert VirtioNetHdr.decode(raw + b"trailing") == hdr
    assert hdr.gso_name == "TCPV4"
    assert VirtioNetHdr(gso_type=0x81).gso_name == "TCPV4|ECN"


def test_header_errors() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        VirtioNetHdr.decode(b"\0" * 9)
    with pytest.raises(ValueError, match="out of range"):
        VirtioNetHdr(gso_size=70000).encode()


def reference_sum(data: bytes) -> int:
    """RFC 1071 done the slow, obvious way: 16-bit words, end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example(accel) -> None:
    # RFC 1071 section 3 example: the sum of these words is 0xddf2
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 63, 1023, 1448, 2047, 2048, 2049, 4095, 9001, 65535, 65536])
def test_sum_matches_reference(accel, size: int) -> None:
    for _ in range(3):
        data = os.urandom(size)
        assert ones_sum(data) == reference_sum(data) % 0xFFFF
        assert ones_sum(memoryview(data)) == ones_sum(bytearray(data))


def test_checksum_verifies_to_zero(accel) -> None:
    data = bytearray(os.urandom(1000)) + b"\0\0"
    struct.pack_into("!H", data, 1000, checksum(data))
    assert ones_sum(data) == 0


def test_pseudo_header_sum_v4_v6() -> None:
    src, dst = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    words = [0xC612, 0x0001, 0xC612, 0x0002, 6, 100]
    assert pseudo_header_sum(6, src, dst, 100) == sum(words) % 0xFFFF
    s6, d6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
    assert pseudo_header_sum(17, s6, d6, 8) == (1 + 2 + 17 + 8)


def test_accelerator_switch() -> None:
    before = offload.accelerator()
    try:
        offload.set_accelerator("python")
        assert offload.accelerator() == "python"
        with pytest.raises(ValueError):
            offload.set_accelerator("gpu")
    finally:
        offload.set_accelerator(before)


def test_numpy_is_imported_on_first_checksum_not_with_tunlab() -> None:
    code = (
        "import sys, tunlab\n"
        "from tunlab.devices.offload import accelerator\n"
        "assert 'numpy' not in sys.modules, 'import tunlab pulled in numpy'\n"
        "print(accelerator())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("numpy", "python")
