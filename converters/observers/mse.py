"""`mse`: the clipping range minimising the expected quantize-dequantize MSE over a streaming
histogram (bin centres stand in for their samples).

Search: the lower and upper ends are shrunk independently over a geometric grid of ratios (coarse,
then refined around the best), since the two ends share one scale and do not separate."""
from __future__ import annotations

import numpy as np

from converters.observers import register_observer
from converters.observers.base import Observer, ObserverConfig, StreamingHistogram


def quant_mse(centers: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              qmin: int, qmax: int) -> np.ndarray:
    """Weighted MSE of fake-quantizing `centers` for every candidate range (lo[i], hi[i])."""
    scale = np.maximum((hi - lo) / (qmax - qmin), 1e-12)[:, None]
    zp = np.clip(np.round(qmin - lo[:, None] / scale), qmin, qmax)
    q = np.clip(np.round(centers[None, :] / scale) + zp, qmin, qmax)
    err = (centers[None, :] - (q - zp) * scale) ** 2
    return err @ counts


@register_observer
class MseObserver(Observer):
    name = "mse"
    coarse = np.geomspace(0.02, 1.0, 20)

    def __init__(self, config: ObserverConfig):
        super().__init__(config)
        self.hist = StreamingHistogram(config.bins)

    def update(self, x) -> None:
        self.hist.update(x)

    def _search(self, lo0: float, hi0: float, ra: np.ndarray, rb: np.ndarray,
                centers, counts, qmin, qmax) -> tuple[float, float, float]:
        a, b = np.meshgrid(ra, rb, indexing="ij")
        lo, hi = (lo0 * a).ravel(), (hi0 * b).ravel()
        err = quant_mse(centers, counts, lo, hi, qmin, qmax)
        i = int(np.argmin(err))
        return float(lo[i]), float(hi[i]), float(err[i])

    def range(self, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
        h = self.hist
        if h.total == 0:
            return 0.0, 0.0
        lo0, hi0 = min(h.min, 0.0), max(h.max, 0.0)
        nz = h.counts > 0
        centers, counts = h.centers()[nz], h.counts[nz]
        r = self.coarse if lo0 < 0 else np.ones(1)
        s = self.coarse if hi0 > 0 else np.ones(1)
        lo, hi, _ = self._search(lo0, hi0, r, s, centers, counts, qmin, qmax)
        # refine: ±15 % around the coarse optimum (the grid step is ~23 %)
        fine = np.linspace(0.85, 1.15, 13)
        ra = fine if lo < 0 else np.ones(1)
        rb = fine if hi > 0 else np.ones(1)
        lo, hi, _ = self._search(lo, hi, ra, rb, centers, counts, qmin, qmax)
        return max(lo, lo0), min(hi, hi0)
