"""tunlab.packets: pure IP/ICMP/UDP/TCP/Ethernet builders and parsers (in tunlab.testing._packets)."""

from tunlab.testing._packets import *  # noqa: F403
from tunlab.testing._packets import __all__ as __all__
