"""The in-memory backend: a device whose far side is a Wire in the same process (any OS, no root)."""

from tunlab.devices._memory.backend import MemoryDevice, Wire

__all__ = ["MemoryDevice", "Wire"]
