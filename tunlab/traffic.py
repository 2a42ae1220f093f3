"""tunlab.traffic: ping, TCP/UDP streams and iperf3 between lab nodes (lives in tunlab.testing.traffic)."""

from tunlab.testing.traffic import *  # noqa: F403
from tunlab.testing.traffic import __all__ as __all__
