"""AsyncDevice and Framed on asyncio, uvloop and trio, against the real kernel."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading

import pytest

from tests.support import udp_to, unique_name
from tunlab import AsyncDevice, DeviceBuilder, Layer, traffic
from tunlab import packets as pk
from tunlab._linux.netns import NetNamespace
from tunlab.devices.offload import GROTable
from tunlab.errors import DeviceClosedError

pytestmark = pytest.mark.root

trio = pytest.importorskip("trio")


async def recv_matching(dev, match, timeout: float = 5.0) -> bytes:
    async def loop() -> bytes:
        while True:
            frame = await dev.recv()
            if match(frame):
                return frame

    return await asyncio.wait_for(loop(), timeout)


def run_asyncio(coro_fn, *, uvloop: bool = False):
    if uvloop:
        uv = pytest.importorskip("uvloop")
        loop = uv.new_event_loop()
        try:
            return loop.run_until_complete(coro_fn())
        finally:
            loop.close()
    return asyncio.run(coro_fn())


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_asyncio_round_trip(quiet_ns, uvloop: bool) -> None:
    ns = quiet_ns

    async def main() -> None:
        dev = await DeviceBuilder().name("tasync").ipv4("198.18.60.1", 24).netns(ns.name).build_async()
        async with dev:
            assert dev.name == "tasync"
            assert await dev.mtu() == 1500
            await dev.set_mtu(1400)
            assert await dev.mtu() == 1400
            assert "198.18.60.1/24" in {str(a) for a in await dev.addresses()}
            with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("198.18.60.1", 0))
                sock.setblocking(False)
                sock.sendto(b"to the library", ("198.18.60.2", 4444))
                frame = await recv_matching(dev, udp_to(4444))
                assert pk.parse_udp(frame).payload == b"to the library"
                await dev.send(
                    pk.udp_packet("198.18.60.2", "198.18.60.1", 4444, sock.getsockname()[1], b"back")
                )
                loop = asyncio.get_running_loop()
                data = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
                assert data == b"back"
            with pytest.raises(BlockingIOError):
                dev.try_recv()

    run_asyncio(main, uvloop=uvloop)


def test_trio_round_trip(ns) -> None:

    async def main() -> None:
        dev = await DeviceBuilder().name("ttrio").ipv6("2001:db8:61::1", 64).netns(ns.name).build_async()
        async with dev:
            assert await dev.mtu() == 1500
            sock = ns.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind(("2001:db8:61::1", 0))
            sock.sendto(b"trio", ("2001:db8:61::2", 5555))
            with trio.fail_after(5):
                while True:
                    frame = await dev.recv()
                    if udp_to(5555)(frame):
                        break
            assert pk.parse_udp(frame).payload == b"trio"
            await dev.send(
                pk.udp_packet("2001:db8:61::2", "2001:db8:61::1", 5555, sock.getsockname()[1], b"ok")
            )
            tsock = trio.socket.from_stdlib_socket(sock)
            with trio.fail_after(5):
                assert await tsock.recv(100) == b"ok"
            tsock.close()

    trio.run(main)


def test_cancelled_recv_leaves_the_device_usable(quiet_ns) -> None:
    ns = quiet_ns

    async def main() -> None:
        dev = await DeviceBuilder().name("tcancel").ipv4("198.18.62.1", 24).netns(ns.name).build_async()
        async with dev:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(dev.recv())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not loop.remove_reader(dev.fileno()), "a reader registration leaked"
            with ns.socket() as sock:
                sock.sendto(b"after cancel", ("198.18.62.2", 6000))
            frame = await recv_matching(dev, udp_to(6000))
            assert pk.parse_udp(frame).payload == b"after cancel"
            # many cancellations in a row: still no leak
            for _ in range(50):
                t = asyncio.create_task(dev.readable())
                await asyncio.sleep(0)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
            assert not loop.remove_reader(dev.fileno())

    asyncio.run(main())


def test_two_waiting_readers_both_wake(quiet_ns) -> None:
    ns = quiet_ns

    async def main() -> None:
        dev = await DeviceBuilder().name("ttwo").ipv4("198.18.63.1", 24).netns(ns.name).build_async()
        async with dev:
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await dev.recv())

            tasks = [asyncio.create_task(reader()) for _ in range(2)]
            await asyncio.sleep(0.05)
            with ns.socket() as sock:
                sock.sendto(b"one", ("198.18.63.2", 7000))
                sock.sendto(b"two", ("198.18.63.2", 7000))
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            assert sorted(pk.parse_udp(f).payload for f in got) == [b"one", b"two"]

    asyncio.run(main())


@pytest.mark.parametrize("runtime", ["asyncio", "trio"])
def test_close_wakes_pending_readers(quiet_ns, runtime: str) -> None:
    ns = quiet_ns

    if runtime == "asyncio":

        async def main() -> None:
            dev = await DeviceBuilder().name("tclose").netns(ns.name).build_async()
            readers = [asyncio.create_task(dev.recv()) for _ in range(3)]
            writer = asyncio.create_task(dev.writable())
            await asyncio.sleep(0.05)
            await writer  # a TUN is always writable
            dev.close()
            for r in readers:
                with pytest.raises(DeviceClosedError, match="closed while a task waited"):
                    await r
            with pytest.raises(DeviceClosedError):
                await dev.recv()

        asyncio.run(main())
    else:

        async def main() -> None:
            dev = await DeviceBuilder().name("tclose").netns(ns.name).build_async()
            errors: list[BaseException] = []

            async def reader() -> None:
                try:
                    await dev.recv()
                except DeviceClosedError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(reader)
                await trio.sleep(0.05)
                dev.close()
            assert len(errors) == 3

        trio.run(main)


def test_many_concurrent_flows_with_framed(quiet_ns) -> None:
    """Kernel -> library: 40 flows at once, read by `async for`; library -> kernel through the writer."""
    ns = quiet_ns

    async def main() -> None:
        dev = await DeviceBuilder().name("tflows").ipv4("198.18.64.1", 24).netns(ns.name).build_async()
        async with dev:
            framed = dev.framed(batch_size=16)
            socks = [ns.socket() for _ in range(40)]
            for i, s in enumerate(socks):
                s.bind(("198.18.64.1", 0))
                s.setblocking(False)
                for n in range(5):
                    s.sendto(f"{i}:{n}".encode(), ("198.18.64.2", 9000 + i))
            want = {f"{i}:{n}".encode() for i in range(40) for n in range(5)}
            seen: set[bytes] = set()

            async def read_all() -> None:
                async for packet in framed:
                    if _is_udp(packet):
                        seen.add(pk.parse_udp(packet).payload)
                    if seen >= want:
                        return

            await asyncio.wait_for(read_all(), 10)
            assert seen == want
            # and back: 200 packets through the batching writer, every socket gets its 5
            for i, s in enumerate(socks):
                for n in range(5):
                    await framed.send(
                        pk.udp_packet(
                            "198.18.64.2",
                            "198.18.64.1",
                            9000 + i,
                            s.getsockname()[1],
                            f"r{i}:{n}".encode(),
                        )
                    )
            await framed.aclose()
            assert framed.pending == 0
            loop = asyncio.get_running_loop()
            for i, s in enumerate(socks):
                got = {await asyncio.wait_for(loop.sock_recv(s, 100), 5) for _ in range(5)}
                assert got == {f"r{i}:{n}".encode() for n in range(5)}
                s.close()

    asyncio.run(main())


def _is_udp(packet: bytes) -> bool:
    try:
        pk.parse_udp(packet)
    except ValueError:
        return False
    return True


@pytest.fixture(params=[True, False], ids=["offload", "plain"])
def async_pair(request, needs_root):
    offload = request.param
    ns_a, ns_b = NetNamespace.create(unique_name()), NetNamespace.create(unique_name())
    try:
        a = (
            DeviceBuilder()
            .name("tuna")
            .offload(offload)
            .ipv4("198.18.65.1", 24)
            .netns(ns_a.name)
            .build_sync()
        )
        b = (
            DeviceBuilder()
            .name("tunb")
            .offload(offload)
            .ipv4("198.18.66.1", 24)
            .netns(ns_b.name)
            .build_sync()
        )
        with ns_a.iproute() as ipr:
            ipr.route("add", dst="198.18.66.0/24", oif=a.if_index)
        with ns_b.iproute() as ipr:
            ipr.route("add", dst="198.18.65.0/24", oif=b.if_index)
        yield ns_a, ns_b, a, b, offload
        a.close()
        b.close()
    finally:
        ns_a.delete()
        ns_b.delete()


def _tcp_transfer_in_thread(ns_a, ns_b, data: bytes, result: dict) -> threading.Thread:
    """tunlab.traffic's TCP stream A -> B in a thread (the event loop relays meanwhile)."""

    def run() -> None:
        res = traffic.tcp_stream(traffic.place(ns_a), traffic.place(ns_b), "198.18.66.1", data=data)
        result["got"] = data if res.exact else b""

    th = threading.Thread(target=run)
    th.start()
    return th


@pytest.mark.parametrize("style", ["framed", "multiple"])
def test_async_relay_tcp_byte_exact(async_pair, style: str) -> None:
    """A TCP stream through an asyncio relay (framed, or recv_multiple/send_multiple)."""
    ns_a, ns_b, a, b, offload = async_pair
    data = os.urandom(1 << 20)

    async def main() -> None:
        da, db = AsyncDevice(a), AsyncDevice(b)

        async def pump(src: AsyncDevice, dst: AsyncDevice) -> None:
            if style == "framed":
                reader, writer = src.framed(), dst.framed_writer()
                async for packet in reader:
                    await writer.send(packet)
                    if not reader.buffered:  # nothing more queued: flush the batch
                        await writer.flush()
            else:
                bufs = [bytearray(10 + 65535) for _ in range(64)]
                sizes = [0] * 64
                table = GROTable()
                while True:
                    n = await src.recv_multiple(bufs, sizes, 10)
                    views = [memoryview(bufs[i])[: 10 + sizes[i]] for i in range(n)]
                    await dst.send_multiple(table, views, 10)

        tasks = [asyncio.create_task(pump(da, db)), asyncio.create_task(pump(db, da))]
        result: dict = {}
        th = _tcp_transfer_in_thread(ns_a, ns_b, data, result)
        while th.is_alive():
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert hashlib.sha256(result["got"]).digest() == hashlib.sha256(data).digest()

    asyncio.run(main())


def test_trio_framed_relay(async_pair) -> None:
    ns_a, ns_b, a, b, offload = async_pair
    data = os.urandom(512 << 10)

    async def main() -> None:
        da, db = AsyncDevice(a), AsyncDevice(b)

        async def pump(src: AsyncDevice, dst: AsyncDevice) -> None:
            reader, writer = src.framed(), dst.framed_writer()
            async for packet in reader:
                await writer.send(packet)
                if not reader.buffered:
                    await writer.flush()

        result: dict = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, da, db)
            nursery.start_soon(pump, db, da)
            th = _tcp_transfer_in_thread(ns_a, ns_b, data, result)
            while th.is_alive():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert result["got"] == data

    trio.run(main)


def test_async_configuration_does_not_block_the_loop(ns) -> None:

    async def main() -> None:
        dev = await DeviceBuilder().name("tcfg").layer(Layer.L2).netns(ns.name).build_async()
        async with dev:
            ticks = 0

            async def heartbeat() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0)
                    ticks += 1

            hb = asyncio.create_task(heartbeat())
            await dev.set_mac_address("02:00:5e:00:53:77")
            await dev.add_address_v4("198.18.67.1", 24)
            await dev.add_address_v6("2001:db8:67::1", 64)
            await dev.set_tx_queue_len(99)
            await dev.enabled(True)
            assert await dev.mac_address() == "02:00:5e:00:53:77"
            assert await dev.tx_queue_len() == 99
            assert await dev.is_running()
            assert await dev.if_index() > 0
            await dev.remove_address("198.18.67.1")
            hb.cancel()
            assert ticks > 10, "the event loop stalled during configuration"

    asyncio.run(main())


def test_async_device_needs_a_running_loop(quiet_ns) -> None:
    dev = AsyncDevice(DeviceBuilder().name("tnoloop").netns(quiet_ns.name).build_sync())
    coro = dev.recv()
    with pytest.raises(RuntimeError, match="running asyncio or trio"):
        coro.send(None)
    coro.close()
    dev.close()


def test_sync_device_configuration_works_inside_a_running_loop(quiet_ns) -> None:
    """pyroute2 refuses to run inside a loop; SyncDevice moves netlink to a thread instead."""

    async def main() -> None:
        with DeviceBuilder().name("tsyncin").netns(quiet_ns.name).build_sync() as dev:
            dev.set_mtu(1280)
            assert dev.mtu == 1280

    asyncio.run(main())
