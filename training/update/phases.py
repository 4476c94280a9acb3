"""Wall seconds of an update's consecutive phases (prepare, fit, gate, publish, ...)."""

from __future__ import annotations

import time


class Laps:
    """``lap(name)`` closes the phase that ran since the previous lap (or since creation)
    and adds its wall seconds under ``name``."""

    def __init__(self) -> None:
        self._began = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        spent = now - self._last
        self.seconds[name] = self.seconds.get(name, 0.0) + spent
        self._last = now
        return spent

    def total(self) -> float:
        """Seconds since creation."""
        return time.perf_counter() - self._began

    def to_json(self) -> dict[str, float]:
        return {name: round(s, 2) for name, s in self.seconds.items()}
