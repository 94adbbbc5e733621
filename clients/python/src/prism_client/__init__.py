"""prism-client: the Prism coordinator's analyst API from Python (notebooks, scripts)."""

from .client import ROOM_FINAL, RUN_FINAL, PrismClient, PrismError, Result, Validation, frame

__all__ = ["PrismClient", "PrismError", "Result", "Validation", "frame", "RUN_FINAL", "ROOM_FINAL"]
__version__ = "0.1.0"
