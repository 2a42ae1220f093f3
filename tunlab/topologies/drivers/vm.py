"""kind: vm — accepted by the schema; its driver (qemu guests) is not in this release."""

from __future__ import annotations

from tunlab.topologies.drivers.base import UnavailableDriver


class VmDriver(UnavailableDriver):
    kind = "vm"
    why = "qemu nodes need their driver (not in this release)"
    interfaces_in_guest = True
