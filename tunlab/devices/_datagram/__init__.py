"""A connected UDP socket as a device: the far end of a link to another host."""

from tunlab.devices._datagram.backend import MAX_DATAGRAM, DatagramDevice

__all__ = ["MAX_DATAGRAM", "DatagramDevice"]
