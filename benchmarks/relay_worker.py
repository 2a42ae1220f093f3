"""Relay processes measured by benchmarks/relay.py (each prints READY [pids], then relays).

usage: python -m benchmarks.relay_worker MODE FD_A FD_B
       (MODE: threads, processes, batch, async, uvloop, framed)
       python -m benchmarks.relay_worker pytun NS_A NS_B  (python-pytun creates its own devices)
"""

from __future__ import annotations

import sys
import threading


def tunlab_relay(fd_a: int, fd_b: int, mode: str) -> None:
    from tunlab import SyncDevice
    from tunlab.relay import Relay

    a, b = SyncDevice.from_fd(fd_a), SyncDevice.from_fd(fd_b)
    if mode.startswith(("impairable-", "delay10-")):
        from tunlab.relay.impair._model import Netem

        impair = Netem(delay="10ms", limit=200_000).params() if mode.startswith("delay10-") else None
        workers = "processes" if mode.endswith("-processes") else "threads"
        relay = Relay(a, b, workers=workers, impairable=True, impair=impair).start()
    elif mode == "processes":
        relay = Relay(a, b, workers="processes").start()
    elif mode == "batch-processes":
        relay = Relay(a, b, mode="batch", workers="processes").start()
    elif mode == "mq2":
        relay = Relay(a, b, queues=2).start()
    elif mode == "api-batch":
        api_relay(a, b)
        return
    elif mode == "api-lists":
        api_relay_lists(a, b)
        return
    else:
        relay = Relay(a, b, mode="batch" if mode == "batch" else "passthrough").start()
    print("READY", *relay.pids, flush=True)
    threading.Event().wait()  # until the harness kills us (process workers die with us)


def api_relay(a: object, b: object) -> None:
    """What a user writes with the batch API: recv_multiple into a PacketBatch, send_multiple
    from it (one arena per direction, nothing allocated per packet)."""
    from tunlab.devices import GROTable, PacketBatch

    def pump(src: object, dst: object) -> None:
        batch, table = PacketBatch(), GROTable()
        recv, send = src.recv_multiple, dst.send_multiple  # type: ignore[attr-defined]
        while True:
            if recv(batch):
                try:
                    send(table, batch)
                except OSError:
                    pass

    threading.Thread(target=pump, args=(b, a), daemon=True).start()
    print("READY", flush=True)
    pump(a, b)


def api_relay_lists(a: object, b: object) -> None:
    """The tun-rs-style form: a list of buffers and sizes, memoryview slices to send."""
    from tunlab.devices import IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN, GROTable

    def pump(src: object, dst: object) -> None:
        bufs = [bytearray(VIRTIO_NET_HDR_LEN + 65535 + 14) for _ in range(IDEAL_BATCH_SIZE)]
        sizes = [0] * IDEAL_BATCH_SIZE
        table = GROTable()
        views = [memoryview(buf) for buf in bufs]
        while True:
            n = src.recv_multiple(bufs, sizes, VIRTIO_NET_HDR_LEN)  # type: ignore[attr-defined]
            try:
                dst.send_multiple(
                    table, [views[i][: VIRTIO_NET_HDR_LEN + sizes[i]] for i in range(n)], VIRTIO_NET_HDR_LEN
                )  # type: ignore[attr-defined]
            except OSError:
                pass

    threading.Thread(target=pump, args=(b, a), daemon=True).start()
    print("READY", flush=True)
    pump(a, b)


def baseline_relay(fd_a: int, fd_b: int, mode: str) -> None:
    """The pre-redesign loops (benchmarks/baseline_relay.py), for the side-by-side ratio."""
    import os
    import subprocess
    from pathlib import Path

    from benchmarks.baseline_relay import thread_relay
    from tunlab import BorrowedSyncDevice

    a = BorrowedSyncDevice.borrow_raw(fd_a)  # only asked about its format; the fds stay raw
    vnet = a.tcp_gso
    size = a.max_frame_size if vnet else max(a.mtu, 1500) + 14 + 64
    if mode == "old-threads":
        thread_relay(fd_a, fd_b, a.max_frame_size, vnet)
        print("READY", flush=True)
        threading.Event().wait()
    script = str(Path(__file__).with_name("baseline_relay.py"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-I", "-S", script, str(i), str(o), str(size), "1" if vnet else "0"],
            pass_fds=(i, o),
        )
        for i, o in ((fd_a, fd_b), (fd_b, fd_a))
    ]
    print("READY", *(p.pid for p in procs), flush=True)
    os.waitpid(procs[0].pid, 0)


def tunlab_async(fd_a: int, fd_b: int, mode: str) -> None:
    """Both directions in one event loop: frames with their headers pass through unchanged."""
    import asyncio

    from tunlab import AsyncDevice

    async def pump(src: AsyncDevice, dst: AsyncDevice) -> None:
        if mode == "framed":
            reader, writer = src.framed(), dst.framed_writer()
            async for packet in reader:
                await writer.send(packet)
                if not reader.buffered:
                    await writer.flush()
        else:
            recv, send = src.recv, dst.send
            while True:
                frame = await recv()
                try:
                    await send(frame)
                except OSError:
                    pass

    async def main() -> None:
        a, b = AsyncDevice.from_fd(fd_a), AsyncDevice.from_fd(fd_b)
        print("READY", flush=True)
        await asyncio.gather(pump(a, b), pump(b, a))

    if mode == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def pytun_relay(ns_a: str, ns_b: str) -> None:
    """The Python peer, used the way its README shows: read() a packet, write() it."""
    import pytun

    from tunlab._linux.netns import NetNamespace

    flags = pytun.IFF_TUN | pytun.IFF_NO_PI

    def make(ns: str, name: str) -> object:
        return NetNamespace.open(ns).call(pytun.TunTapDevice, name=name, flags=flags)

    a, b = make(ns_a, "tuna"), make(ns_b, "tunb")

    def pump(src: object, dst: object) -> None:
        read, write = src.read, dst.write  # type: ignore[attr-defined]
        while True:
            frame = read(65536)
            try:
                write(frame)
            except pytun.Error:
                pass  # e.g. the other side is not up yet: dropped, as the C relay does

    threading.Thread(target=pump, args=(b, a), daemon=True).start()
    print("READY", flush=True)
    pump(a, b)


def main() -> None:
    mode = sys.argv[1]
    if mode == "pytun":
        pytun_relay(sys.argv[2], sys.argv[3])
    elif mode.startswith("old-"):
        baseline_relay(int(sys.argv[2]), int(sys.argv[3]), mode)
    elif mode in ("async", "uvloop", "framed"):
        tunlab_async(int(sys.argv[2]), int(sys.argv[3]), mode)
    else:
        tunlab_relay(int(sys.argv[2]), int(sys.argv[3]), mode)


if __name__ == "__main__":
    main()
