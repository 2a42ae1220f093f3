"""tunlab.traffic: ping, TCP/UDP streams and iperf3 between lab nodes (lives in tunlab.testing._traffic)."""

from tunlab.testing._traffic import *  # noqa: F403
from tunlab.testing._traffic import __all__ as __all__
