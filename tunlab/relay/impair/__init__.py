"""tunlab.relay.impair: netem and tbf in the relay: delay, jitter, loss, duplication, corruption,
reordering, rate, slots and token-bucket shaping, per direction, seeded, on any kernel.

Names load their module on first use (a worker process imports only the engine, no pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunlab._lazy import lazy

if TYPE_CHECKING:
    from tunlab.relay.impair._model import (
        FourState,
        GilbertElliott,
        LinkImpairment,
        LossModel,
        Netem,
        Slot,
        TokenBucket,
    )
    from tunlab.relay.impair._netem import NetemQueue
    from tunlab.relay.impair._params import NetemParams
    from tunlab.relay.impair._stage import ImpairStage
    from tunlab.relay.impair._tbf import Shaper

__getattr__, __dir__ = lazy(
    __name__,
    {
        "FourState": "tunlab.relay.impair._model",
        "GilbertElliott": "tunlab.relay.impair._model",
        "ImpairStage": "tunlab.relay.impair._stage",
        "LinkImpairment": "tunlab.relay.impair._model",
        "LossModel": "tunlab.relay.impair._model",
        "Netem": "tunlab.relay.impair._model",
        "NetemParams": "tunlab.relay.impair._params",
        "NetemQueue": "tunlab.relay.impair._netem",
        "Shaper": "tunlab.relay.impair._tbf",
        "Slot": "tunlab.relay.impair._model",
        "TokenBucket": "tunlab.relay.impair._model",
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
