from tests.offload.helpers import accel

__all__ = ["accel"]
