"""tunlab.packets: pure IP/ICMP/UDP/TCP/Ethernet builders and parsers (in tunlab.testing.packets)."""

from tunlab.testing.packets import *  # noqa: F403
from tunlab.testing.packets import __all__ as __all__
