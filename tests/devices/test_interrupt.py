"""InterruptEvent: wake a blocked reader, time out, and let queued data win."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tunlab import DeviceBuilder, InterruptEvent

pytestmark = pytest.mark.root


def test_event_state() -> None:
    with InterruptEvent() as ev:
        assert not ev.is_triggered
        ev.trigger()
        ev.trigger()  # idempotent
        assert ev.is_triggered
        ev.reset()
        assert not ev.is_triggered


def test_trigger_wakes_a_blocked_reader(quiet_ns) -> None:
    ns = quiet_ns
    with DeviceBuilder().name("tint").netns(ns.name).build_sync() as dev, InterruptEvent() as ev:
        result: dict[str, BaseException] = {}

        def reader() -> None:
            try:
                dev.recv_intr(bytearray(2048), ev)
            except BaseException as exc:
                result["exc"] = exc

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.2)
        assert t.is_alive()
        ev.trigger()
        t.join(5)
        assert not t.is_alive()
        assert isinstance(result["exc"], InterruptedError)
        # a triggered event keeps interrupting until reset
        with pytest.raises(InterruptedError):
            dev.wait_readable_intr(ev, timeout=1)
        ev.reset()
        with pytest.raises(TimeoutError):
            dev.wait_readable_intr(ev, timeout=0.1)


def test_timeout(quiet_ns) -> None:
    ns = quiet_ns
    with DeviceBuilder().name("tto").netns(ns.name).build_sync() as dev, InterruptEvent() as ev:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            dev.recv_intr(bytearray(2048), ev, timeout=0.3)
        assert time.monotonic() - start >= 0.29


def test_queued_packet_wins_over_interrupt(quiet_ns) -> None:
    ns = quiet_ns
    with (
        DeviceBuilder().name("twin").ipv4("198.18.30.1", 24).netns(ns.name).build_sync() as dev,
        InterruptEvent() as ev,
    ):
        with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"first", ("198.18.30.2", 9))
        ev.trigger()
        buf = bytearray(2048)
        dev.wait_readable_intr(ev, timeout=1)  # data is there: no InterruptedError
        n = dev.recv_intr(buf, ev, timeout=1)
        assert n > 0
        dev.set_nonblocking(True)
        while True:  # drain whatever else the kernel sent (IPv6 router solicitations, ...)
            try:
                dev.recv()
            except BlockingIOError:
                break
        with pytest.raises(InterruptedError):
            dev.recv_intr(buf, ev, timeout=1)
