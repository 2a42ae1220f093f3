"""Property tests: split(coalesce(flow)) gives the flow back; garbage never crashes either."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.offload.helpers import tcp_fields
from tunlab import packets as pk
from tunlab.devices.offload import VirtioNetHdr, coalesce, split
from tunlab.devices.offload import _csum as csum
from tunlab.devices.offload._gso import split_frame

ADDRS = st.sampled_from([("198.18.1.1", "198.18.1.2"), ("2001:db8:1::1", "2001:db8:1::2")])
OPTIONS = st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(8), b"\x02\x04\x05\xb4"])
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tcp_flows(draw):
    addrs = draw(ADDRS)
    mss = draw(st.integers(1, 1500))
    count = draw(st.integers(1, 30))
    last = draw(st.integers(1, mss))
    seq = draw(st.integers(0, 2**32 - 1))  # sequence numbers wrap
    opts = draw(OPTIONS)
    psh_last = draw(st.booleans())
    segs = []
    for i in range(count):
        size = last if i == count - 1 else mss
        payload = (
            draw(st.binary(min_size=size, max_size=size))
            if size < 64
            else bytes((i * 7 + j) & 0xFF for j in range(size))
        )
        flags = 0x18 if (psh_last and i == count - 1) else 0x10
        segs.append(
            pk.tcp_packet(
                *addrs,
                1111,
                2222,
                payload,
                seq=(seq + i * mss) & 0xFFFFFFFF,
                ack=5,
                flags=flags,
                options=opts,
            )
        )
    return segs


def run_both_engines(fn):
    """fn's result with the pure-Python checksums and with numpy's (which must agree); where
    numpy cannot be had (the wine run), the pure engine alone."""
    results = []
    before = csum.accelerator()
    engines = ("python", "numpy") if csum.numpy_module() is not None else ("python", "python")
    try:
        for engine in engines:
            csum.set_accelerator(engine)
            results.append(fn())
    finally:
        csum.set_accelerator(before)
    assert results[0] == results[1], "numpy and pure-Python engines disagree"
    return results[0]


@FAST
@given(tcp_flows())
def test_split_of_coalesce_gives_the_flow_back(segs) -> None:
    out = run_both_engines(lambda: coalesce(segs))
    back = [p for o in out for p in split(VirtioNetHdr.decode(o), o[10:])]
    assert [tcp_fields(p)["payload"] for p in back] == [tcp_fields(s)["payload"] for s in segs]
    assert [tcp_fields(p)["seq"] for p in back] == [tcp_fields(s)["seq"] for s in segs]
    assert [tcp_fields(p)["flags"] for p in back] == [tcp_fields(s)["flags"] for s in segs]
    assert all(pk.l4_checksum_ok(p) for p in back)
    assert all(len(o) - 10 <= 65535 for o in out)


@FAST
@given(st.lists(st.binary(max_size=200), max_size=20), st.booleans())
def test_coalesce_never_crashes_on_garbage(packets, udp) -> None:
    out = coalesce(packets, udp_gro=udp)
    assert len(out) == len(packets)  # nothing merges, nothing is lost
    assert [o[10:] for o in out] == packets


@FAST
@given(
    st.builds(
        VirtioNetHdr,
        st.integers(0, 255),
        st.sampled_from([0, 1, 3, 4, 5, 0x81, 7]),
        st.integers(0, 65535),
        st.integers(0, 2000),
        st.integers(0, 200),
        st.integers(0, 40),
    ),
    st.binary(max_size=400),
)
def test_split_never_crashes_on_garbage(hdr, data) -> None:
    for fn in (split, split_frame):
        try:
            out = fn(hdr, data)
        except ValueError:
            continue
        assert isinstance(out, list)
        assert all(isinstance(p, bytes) for p in out)


@FAST
@given(tcp_flows(), st.data())
def test_mangled_super_packets_raise_value_error_only(segs, data) -> None:
    out = coalesce(segs)[0]
    raw = bytearray(out[10:])
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        pieces = split(VirtioNetHdr.decode(out), bytes(raw[:cut]))
    except ValueError:
        return
    assert all(isinstance(p, bytes) and len(p) > 0 for p in pieces)
