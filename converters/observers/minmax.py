"""`minmax`: the exact running min / max of every batch."""
from __future__ import annotations

import numpy as np

from converters.observers import register_observer
from converters.observers.base import Observer, ObserverConfig, _finite


@register_observer
class MinMaxObserver(Observer):
    name = "minmax"

    def __init__(self, config: ObserverConfig):
        super().__init__(config)
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        x = _finite(x)
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def range(self, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
        if self.lo > self.hi:
            return 0.0, 0.0
        return min(self.lo, 0.0), max(self.hi, 0.0)
