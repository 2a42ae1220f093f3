"""tunlab.relay: userspace links between two devices: one pump per direction, stages in between.

Names load their module on first use, so a worker process imports only what it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.relay.direction import DIRECTIONS, Direction
    from tunlab.relay.pump import Pump
    from tunlab.relay.relay import Relay
    from tunlab.relay.stages import HookStage, PacketHook, Pipeline, Stage, register_stage, stage_from_spec
    from tunlab.relay.stats import DirectionStats

__getattr__, __dir__ = lazy(
    __name__,
    {
        "DIRECTIONS": "tunlab.relay.direction",
        "Direction": "tunlab.relay.direction",
        "DirectionStats": "tunlab.relay.stats",
        "HookStage": "tunlab.relay.stages",
        "PacketHook": "tunlab.relay.stages",
        "Pipeline": "tunlab.relay.stages",
        "Pump": "tunlab.relay.pump",
        "Relay": "tunlab.relay.relay",
        "Stage": "tunlab.relay.stages",
        "register_stage": "tunlab.relay.stages",
        "stage_from_spec": "tunlab.relay.stages",
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
