"""`percentile`: clip to the (100 - p)-th and p-th percentiles of a streaming histogram."""
from __future__ import annotations

from converters.observers import register_observer
from converters.observers.base import Observer, ObserverConfig, StreamingHistogram


@register_observer
class PercentileObserver(Observer):
    name = "percentile"

    def __init__(self, config: ObserverConfig):
        super().__init__(config)
        self.hist = StreamingHistogram(config.bins)

    def update(self, x) -> None:
        self.hist.update(x)

    def range(self, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
        if self.hist.total == 0:
            return 0.0, 0.0
        p = self.config.percentile / 100.0
        lo = self.hist.quantile(1.0 - p)
        hi = self.hist.quantile(p)
        return min(lo, 0.0), max(hi, 0.0)
