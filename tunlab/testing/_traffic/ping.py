"""ping from a place, its summary parsed (and the argv spelled for each OS)."""

from __future__ import annotations

import math
import re
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunlab.errors import LabError

if TYPE_CHECKING:
    pass


# ---- ping ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PingResult:
    address: str
    sent: int
    received: int
    rtt_ms: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Fraction lost, 0.0 .. 1.0."""
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def reachable(self) -> bool:
        """At least one ping was answered."""
        return self.received > 0

    @property
    def rtt_avg_ms(self) -> float | None:
        """The mean round-trip time of the answered pings, in ms (None when none was)."""
        return statistics.fmean(self.rtt_ms) if self.rtt_ms else None


def ping_argv(
    address: str, count: int, interval: float, timeout: float, platform: str = sys.platform
) -> list[str]:
    """ping's argv on this OS: each spells 'wait at most' differently (Linux -W per reply in
    seconds; macOS and FreeBSD -t for the whole run; OpenBSD and NetBSD -w), and the BSDs other
    than FreeBSD ping IPv6 with ping6."""
    whole = str(max(1, math.ceil(count * interval + timeout)))
    if platform.startswith("linux"):
        return ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(timeout), address]
    v6 = ":" in address
    if platform == "win32":  # -n is the count there; -w the wait per reply in ms; no interval
        return [
            "ping",
            *(["-6"] if v6 else ["-4"]),
            "-n",
            str(count),
            "-w",
            str(int(timeout * 1000)),
            address,
        ]
    program = "ping6" if v6 and not platform.startswith("freebsd") else "ping"
    base = [
        program,
        *(["-6"] if v6 and program == "ping" else []),
        "-n",
        "-c",
        str(count),
        "-i",
        str(interval),
    ]
    if platform.startswith(("darwin", "freebsd")):
        return [*base, *([] if v6 and platform.startswith("darwin") else ["-t", whole]), address]
    return [*base, "-w", whole, address]


def ping(
    source: Any, address: str, *, count: int = 3, interval: float = 0.2, timeout: float = 2.0
) -> PingResult:
    """ping from a place (with .run) to an address; parses what ping printed."""
    if shutil.which("ping") is None:
        raise LabError("ping is not installed (apt-get install iputils-ping)")
    argv = ping_argv(str(address), count, interval, timeout)
    done = source.run(argv, timeout=count * (interval + timeout) + 10)
    text = done.stdout.decode(errors="replace") if isinstance(done.stdout, bytes) else str(done.stdout)
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    if m is None:  # Windows: "Packets: Sent = 2, Received = 2, Lost = 0"
        m = re.search(r"Sent = (\d+), Received = (\d+)", text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (count, 0)
    rtts = [float(x) for x in re.findall(r"time[=<]([\d.]+) ?ms", text)]
    return PingResult(str(address), sent, received, rtts)


# ---- TCP stream ---------------------------------------------------------------------------------
