"""Packet capture on any interface of a namespace (Linux) or of the host (macOS, BSD), to a pcap
file and a parsed view.

An AF_PACKET socket opened inside the interface's namespace with PACKET_VNET_HDR sees each
packet once, as the kernel handles it: a GSO super-packet arrives whole, with its virtio-net
header (gso_type, gso_size), which is what offload assertions need. The pcap file holds the
packets without that header, so tcpdump, tshark and Wireshark read it.

macOS and the BSDs have no AF_PACKET and no namespaces: there two BPF descriptors on the
interface, one per direction, do the same (TUN packets arrive without their 4-byte address
family; macOS BPF cannot show only sent packets, so they are the ones its incoming-only
descriptor did not see, sorted out when the capture stops).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunlab._linux.netns import NetNamespace
from tunlab._linux.packet_socket import PACKET_OUTGOING, capture_socket
from tunlab.devices.offload._gso import complete_checksum, link_header_len
from tunlab.devices.offload._virtio import VIRTIO_NET_HDR_LEN, VirtioNetHdr

if TYPE_CHECKING:
    from tunlab.devices._bsd.system import System

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6 (TUN, tun-pair)
ARPHRD_ETHER = 1
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


@dataclass(frozen=True)
class CapturedPacket:
    """One packet as the kernel saw it on the interface."""

    timestamp: float
    outgoing: bool
    data: bytes  # the frame (Ethernet) or IP packet (TUN), without the virtio-net header
    gso_type: int
    gso_size: int
    l2: bool

    @property
    def ip(self) -> bytes:
        """The IP packet (the Ethernet header removed where there is one)."""
        if not self.l2:
            return self.data
        try:
            return self.data[link_header_len(self.data) :]
        except ValueError:  # shorter than an Ethernet header
            return b""

    @property
    def is_gso(self) -> bool:
        """The packet is a GSO super-packet (gso_type is not none)."""
        return self.gso_type != 0

    def __len__(self) -> int:
        return len(self.data)


NATIVE_BPF = not sys.platform.startswith("linux")


def _link_type(ns: NetNamespace, ifname: str) -> int:
    with ns.iproute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise ValueError(f"capture: no interface '{ifname}' in {ns.name or ns.path}")
        return int(ipr.link("get", index=found[0])[0]["ifi_type"])


class Capture:
    """Record packets on one interface until stopped; `with Capture(ns, "eth0", path) as cap:`."""

    def __init__(
        self,
        ns: NetNamespace | None,
        interface: str,
        path: str | os.PathLike[str] | None = None,
        *,
        snaplen: int = 262144,
        raw: bool = False,
        limit: int | None = None,
    ) -> None:
        """ns: the interface's namespace on Linux; None on macOS and the BSDs (the host).
        limit: keep at most this many packets (the first ones)."""
        if ns is None and not NATIVE_BPF:
            raise ValueError(f"capture: name the namespace of '{interface}' (Linux labs live in namespaces)")
        self.ns = ns
        self.interface = interface
        self.path = Path(path) if path is not None else None
        self.snaplen = snaplen
        self.raw = raw  # True: keep packets as the kernel handed them (checksums may be partial)
        self.limit = limit
        self.packets: list[CapturedPacket] = []
        self._l2 = ns is not None and _link_type(ns, interface) == ARPHRD_ETHER
        self._bpf: _BpfSource | None = None
        self._sock: socket.socket | None = None
        self._stop: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._file: Any = None

    def start(self) -> Capture:
        """Start capturing (AF_PACKET in the namespace; BPF on macOS/BSD); returns self."""
        if self.ns is None:
            return self._start_bpf()
        sock = capture_socket(self.ns, self.interface)
        try:
            self._open_file()
        except BaseException:
            sock.close()
            if self._file is not None:
                self._file.close()
                self._file = None
            raise
        self._sock = sock
        self._stop = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.interface}", daemon=True)
        self._thread.start()
        return self

    def _open_file(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed in stop)
            link = LINKTYPE_ETHERNET if self._l2 else LINKTYPE_RAW
            self._file.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, self.snaplen, link))

    def _write(self, pkt: CapturedPacket) -> None:
        if self._file is not None:
            snap = pkt.data[: self.snaplen]
            sec = int(pkt.timestamp)
            self._file.write(
                _PCAP_RECORD.pack(sec, int((pkt.timestamp - sec) * 1e6), len(snap), len(pkt.data))
            )
            self._file.write(snap)

    def _start_bpf(self) -> Capture:
        if sys.platform == "win32":
            from tunlab.errors import UnsupportedOperationError

            raise UnsupportedOperationError(
                "capture is not supported on win32 (Windows has neither AF_PACKET nor BPF; "
                "capture with Wireshark and Npcap, or read the frames from the device itself)"
            )
        source = _BpfSource(self.interface)
        try:
            self._l2 = source.l2
            self._open_file()
        except BaseException:
            source.close()
            raise
        self._bpf = source
        self._stop = os.pipe()
        self._thread = threading.Thread(target=self._run_bpf, name=f"capture-{self.interface}", daemon=True)
        self._thread.start()
        return self

    def _run_bpf(self) -> None:
        assert self._bpf is not None
        assert self._stop is not None
        source, stop_r = self._bpf, self._stop[0]
        while True:
            ready, _, _ = select.select([*source.fds, stop_r], [], [])
            got = [fd for fd in ready if fd != stop_r]
            if not got:
                return
            for fd in got:
                try:
                    source.read(fd)
                except OSError:
                    return

    def _run(self) -> None:
        assert self._sock is not None
        assert self._stop is not None
        sock, stop_r = self._sock.fileno(), self._stop[0]
        rsock = self._sock
        buf = bytearray(65536 + VIRTIO_NET_HDR_LEN + 64)
        while True:
            ready, _, _ = select.select([sock, stop_r], [], [])
            if stop_r in ready and sock not in ready:
                return
            try:
                n, addr = rsock.recvfrom_into(buf)  # nonblocking: another reader may have won
            except BlockingIOError:
                continue
            except OSError:
                return
            now = time.time()
            hdr = VirtioNetHdr.decode(buf)
            data = bytes(buf[VIRTIO_NET_HDR_LEN:n])
            if hdr.needs_csum and not self.raw:
                # CHECKSUM_PARTIAL: the field holds only the pseudo-header sum. Fill in what goes
                # on the wire, so Wireshark and tshark validate the capture.
                with contextlib.suppress(ValueError):
                    data = complete_checksum(hdr, data)
            pkt = CapturedPacket(now, addr[2] == PACKET_OUTGOING, data, hdr.gso_type, hdr.gso_size, self._l2)
            if self.limit is not None and len(self.packets) >= self.limit:
                continue
            self.packets.append(pkt)
            self._write(pkt)

    def stop(self) -> None:
        """Stop capturing and close the pcap; the packets stay in .packets."""
        if self._stop is None:
            return
        time.sleep(0.05)  # let packets already in flight reach the socket
        os.write(self._stop[1], b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in self._stop:
            os.close(fd)
        self._stop = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._bpf is not None:
            self.packets = self._bpf.packets()[: self.limit]
            for pkt in self.packets:
                self._write(pkt)
            self._bpf.close()
            self._bpf = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- views ------------------------------------------------------------------------------
    def outgoing(self) -> list[CapturedPacket]:
        """Packets the interface transmitted."""
        return [p for p in self.packets if p.outgoing]

    def incoming(self) -> list[CapturedPacket]:
        """Packets the interface received."""
        return [p for p in self.packets if not p.outgoing]

    def gso_packets(self) -> list[CapturedPacket]:
        """Packets that crossed as GSO super-packets (their virtio-net header says so)."""
        return [p for p in self.packets if p.is_gso]

    def tcp_payload_sizes(self, *, outgoing: bool | None = None, port: int | None = None) -> list[int]:
        """TCP payload size of each captured TCP packet (optionally one direction / port)."""
        out = []
        for p in self.packets:
            if outgoing is not None and p.outgoing != outgoing:
                continue
            info = tcp_info(p.ip)
            if info is None:
                continue
            sport, dport, payload = info
            if port is not None and port not in (sport, dport):
                continue
            if payload:
                out.append(payload)
        return out


def bpf_system() -> System:
    """The OS calls a BPF capture makes (the syscall double replaces this in tests)."""
    from tunlab.devices._bsd.abi import ABIS
    from tunlab.devices._bsd.system import System
    from tunlab.devices._platform import current_platform

    return System(ABIS[current_platform()])


class _BpfSource:
    """A capture's BPF descriptors (tunlab.devices._bsd.bpf) and the packets they have read."""

    def __init__(self, interface: str) -> None:
        from tunlab.devices._bsd.bpf import DirectionalTap

        self.tap = DirectionalTap(bpf_system(), interface)
        self.l2 = self.tap.l2
        self.fds = self.tap.fds
        self.seen: dict[str | None, list[CapturedPacket]] = {"in": [], "out": [], None: []}

    def read(self, fd: int) -> None:
        frames = self.tap.read(fd)
        now = time.time()
        for direction, data in frames:
            self.seen[direction].append(CapturedPacket(now, direction == "out", data, 0, 0, self.l2))

    def packets(self) -> list[CapturedPacket]:
        """Both directions in time order; on macOS the sent ones are those the incoming-only
        descriptor did not see."""
        out = self.seen["in"] + self.seen["out"]
        unmatched = Counter(p.data for p in self.seen["in"])
        for p in self.seen[None]:
            if unmatched[p.data] > 0:
                unmatched[p.data] -= 1
            else:
                out.append(CapturedPacket(p.timestamp, True, p.data, 0, 0, p.l2))
        return sorted(out, key=lambda p: p.timestamp)

    def close(self) -> None:
        self.tap.close()


def tcp_info(ip: bytes) -> tuple[int, int, int] | None:
    """(source port, destination port, payload length) of a TCP/IP packet, else None."""
    if len(ip) < 20:
        return None
    version = ip[0] >> 4
    if version == 4:
        ihl = (ip[0] & 0xF) * 4
        if ip[9] != 6 or len(ip) < ihl + 20:
            return None
        total = struct.unpack_from("!H", ip, 2)[0]
    elif version == 6:
        ihl = 40
        if len(ip) < 60 or ip[6] != 6:
            return None
        total = 40 + struct.unpack_from("!H", ip, 4)[0]
    else:
        return None
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    thl = (ip[ihl + 12] >> 4) * 4
    return sport, dport, max(0, min(total, len(ip)) - ihl - thl)


def capture_for(
    ns: NetNamespace | None,
    interface: str,
    path: str | os.PathLike[str] | None,
    *,
    seconds: float,
    count: int | None = None,
) -> Capture:
    """Capture until `seconds` have passed or `count` packets were seen; the stopped Capture
    (what `tunlab capture` does)."""
    if not 0 < seconds <= 86400:
        raise ValueError(f"seconds: expected more than 0 and at most 86400, got {seconds!r}")
    if count is not None and count < 1:
        raise ValueError(f"count: expected 1 or more, got {count!r}")
    deadline = time.monotonic() + seconds
    with Capture(ns, interface, path, limit=count) as cap:
        while time.monotonic() < deadline and (count is None or len(cap.packets) < count):
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return cap


def capture_running(
    name: str, node: str, interface: str, path: str | os.PathLike[str], seconds: float, count: int | None
) -> list[CapturedPacket]:
    """`tunlab capture`: packets on a node's interface of a running lab (held by any process on
    this machine), into a pcap file at path, for `seconds` or until `count` packets."""
    from tunlab.errors import LabError
    from tunlab.topologies._operations import node_of

    _state, handle = node_of(name, node)
    if handle is None:
        raise LabError(
            f"'{node}' is a VM: its interfaces are in its guest kernel (capture there with tcpdump)"
        )
    return capture_for(handle.netns, interface, path, seconds=seconds, count=count).packets


@contextlib.contextmanager
def capture(
    ns: NetNamespace | None, interface: str, path: str | os.PathLike[str] | None = None, *, raw: bool = False
) -> Iterator[Capture]:
    """`with capture(ns, "eth0", "out.pcap") as cap: ...` then look at cap.packets."""
    with Capture(ns, interface, path, raw=raw) as cap:
        yield cap
