"""tunlab.relay: userspace links between two devices: one pump per direction, stages in between.

Names load their module on first use, so a worker process imports only what it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.relay._direction import DIRECTIONS, Direction
    from tunlab.relay._pump import Pump
    from tunlab.relay._relay import Relay
    from tunlab.relay._stages import HookStage, PacketHook, Pipeline, Stage, register_stage, stage_from_spec
    from tunlab.relay._stats import DirectionStats

__getattr__, __dir__ = lazy(
    __name__,
    {
        "DIRECTIONS": "tunlab.relay._direction",
        "Direction": "tunlab.relay._direction",
        "DirectionStats": "tunlab.relay._stats",
        "HookStage": "tunlab.relay._stages",
        "PacketHook": "tunlab.relay._stages",
        "Pipeline": "tunlab.relay._stages",
        "Pump": "tunlab.relay._pump",
        "Relay": "tunlab.relay._relay",
        "Stage": "tunlab.relay._stages",
        "register_stage": "tunlab.relay._stages",
        "stage_from_spec": "tunlab.relay._stages",
    },
)

__all__ = [
    "DIRECTIONS",
    "Direction",
    "DirectionStats",
    "HookStage",
    "PacketHook",
    "Pipeline",
    "Pump",
    "Relay",
    "Stage",
    "register_stage",
    "stage_from_spec",
]
