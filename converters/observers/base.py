"""Observer base class, the streaming histogram the histogram-based observers share, and the
range -> (scale, zero point) rule of edgert's activations (int8 asymmetric per-tensor, docs/design.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass
class ObserverConfig:
    percentile: float = 99.99     # for "percentile": upper percentile (lower = 100 - p)
    bins: int = 4096              # histogram resolution (the histogram keeps between bins/2 and bins)


class Observer:
    name: ClassVar[str] = ""

    def __init__(self, config: ObserverConfig):
        self.config = config

    def update(self, x: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__}.update")

    def range(self, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
        """The real range to map onto [qmin, qmax]; always contains 0."""
        raise NotImplementedError(f"{type(self).__name__}.range")


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).ravel()
    if not np.isfinite(x).all():
        x = x[np.isfinite(x)]
    return x


class StreamingHistogram:
    """A histogram whose bins sit on a grid aligned to 0 (bin k covers [k·w, (k+1)·w)).

    When a batch falls outside the current range the bin width doubles, which merges bin pairs
    exactly (no re-interpolation error), until the span fits in `max_bins` again."""

    def __init__(self, max_bins: int = 4096):
        self.max_bins = max(8, int(max_bins))
        self.width = 0.0
        self.k0 = 0
        self.counts = np.zeros(0, np.float64)
        self.min = np.inf
        self.max = -np.inf

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def _coarsen(self) -> None:
        idx = (np.arange(self.counts.size) + self.k0) // 2
        new_k0 = self.k0 // 2
        self.counts = np.bincount(idx - new_k0, weights=self.counts)
        self.k0 = new_k0
        self.width *= 2.0

    def update(self, x: np.ndarray) -> None:
        x = _finite(x)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.width == 0.0:
            span = self.max - self.min
            self.width = span / (self.max_bins - 2) if span > 0 else max(abs(lo), 1e-12) / self.max_bins
            self.k0 = int(np.floor(self.min / self.width))
        while True:
            kmin = min(self.k0, int(np.floor(self.min / self.width)))
            kmax = max(self.k0 + self.counts.size - 1, int(np.floor(self.max / self.width)))
            if kmax - kmin + 1 <= self.max_bins:
                break
            self._coarsen()
        if kmin < self.k0 or kmax >= self.k0 + self.counts.size:
            grown = np.zeros(kmax - kmin + 1, np.float64)
            off = self.k0 - kmin
            grown[off:off + self.counts.size] = self.counts
            self.counts, self.k0 = grown, kmin
        k = np.floor(x.astype(np.float64) / self.width).astype(np.int64) - self.k0
        np.clip(k, 0, self.counts.size - 1, out=k)
        self.counts += np.bincount(k, minlength=self.counts.size)

    def edges(self) -> np.ndarray:
        return (np.arange(self.counts.size + 1) + self.k0) * self.width

    def centers(self) -> np.ndarray:
        return (np.arange(self.counts.size) + self.k0 + 0.5) * self.width

    def quantile(self, q: float) -> float:
        """Approximate q-quantile (0..1), linear inside a bin, clamped to the exact min/max."""
        if self.counts.size == 0:
            return 0.0
        cdf = np.cumsum(self.counts)
        target = q * cdf[-1]
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.counts.size - 1)
        before = cdf[i - 1] if i > 0 else 0.0
        frac = (target - before) / self.counts[i] if self.counts[i] > 0 else 0.0
        v = (self.k0 + i + frac) * self.width
        return float(min(max(v, self.min), self.max))


def qparams_from_range(lo: float, hi: float, qmin: int = -128, qmax: int = 127
                       ) -> tuple[np.float32, np.int8]:
    """Asymmetric per-tensor (scale, zero point) whose grid holds real 0 exactly (TFLite int8 spec)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if not scale > 1e-12:  # constant-zero tensor: any scale works; keep it representable
        scale = 1e-6
    scale = np.float32(scale)
    zp = int(np.clip(np.round(qmin - lo / float(scale)), qmin, qmax))
    return scale, np.int8(zp)
