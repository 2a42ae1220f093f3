"""tunlab.relay.impair: netem and tbf in the relay: delay, jitter, loss, duplication, corruption,
reordering, rate, slots and token-bucket shaping, per direction, seeded, on any kernel.

Names load their module on first use (a worker process imports only the engine, no pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.relay.impair.model import (
        FourState,
        GilbertElliott,
        LinkImpairment,
        LossModel,
        Netem,
        Slot,
        TokenBucket,
    )
    from tunlab.relay.impair.netem import NetemQueue
    from tunlab.relay.impair.params import NetemParams
    from tunlab.relay.impair.stage import ImpairStage
    from tunlab.relay.impair.tbf import Shaper

__getattr__, __dir__ = lazy(
    __name__,
    {
        "FourState": "tunlab.relay.impair.model",
        "GilbertElliott": "tunlab.relay.impair.model",
        "ImpairStage": "tunlab.relay.impair.stage",
        "LinkImpairment": "tunlab.relay.impair.model",
        "LossModel": "tunlab.relay.impair.model",
        "Netem": "tunlab.relay.impair.model",
        "NetemParams": "tunlab.relay.impair.params",
        "NetemQueue": "tunlab.relay.impair.netem",
        "Shaper": "tunlab.relay.impair.tbf",
        "Slot": "tunlab.relay.impair.model",
        "TokenBucket": "tunlab.relay.impair.model",
    },
)

__all__ = [
    "FourState",
    "GilbertElliott",
    "ImpairStage",
    "LinkImpairment",
    "LossModel",
    "Netem",
    "NetemParams",
    "NetemQueue",
    "Shaper",
    "Slot",
    "TokenBucket",
]
