"""Traffic between lab nodes (or any two places that can open sockets): ping, TCP and UDP
streams with byte-exact verification, one-way delay and loss, request/response latency, and an
iperf3 adapter — one module per kind of traffic.

A "place" is anything with `.socket(family, type)` and `.run(argv)`: a lab node, a tun_device
peer, or a NetNamespace wrapped in `place(ns)`.
"""

from __future__ import annotations

from tunlab.testing._traffic.iperf import iperf3
from tunlab.testing._traffic.latency import LatencyResult, request_response
from tunlab.testing._traffic.one_way import OneWayResult, one_way
from tunlab.testing._traffic.ping import PingResult, ping, ping_argv
from tunlab.testing._traffic.places import Place, place
from tunlab.testing._traffic.streams import StreamResult, tcp_stream, udp_stream

__all__ = [
    "LatencyResult",
    "OneWayResult",
    "PingResult",
    "Place",
    "StreamResult",
    "iperf3",
    "one_way",
    "ping",
    "ping_argv",
    "place",
    "request_response",
    "tcp_stream",
    "udp_stream",
]
