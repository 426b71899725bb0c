"""`tokenclip`: Outlier Suppression's token-wise clipping (coarse stage).

Paper: Wei et al., "Outlier Suppression: Pushing the Limit of Low-bit Transformer Language Models",
NeurIPS 2022, section 4.2 ("token-wise clipping").  Outliers in transformer activations sit in a
few tokens; clipping them costs little, so the clipping range is searched over quantiles of the
per-token extremes rather than of all values:

    hi(alpha) = quantile_alpha(token maxima),  lo(alpha) = quantile_(1 - alpha)(token minima)

for alpha from 1 (the min/max range) down to 0.9 (a fine grid near 1, where the rare outlier
tokens are cut off).

Tokens: the last axis is the channel axis and every other position a token ([batch, tokens,
channels], [rows, channels]); a rank-4 tensor is taken as NCHW (the layout edgert's ONNX graphs
carry), channel axis 1, each (n, h, w) position a token.  A rank-0/1 tensor is one value per token.

Streaming: three fixed-size histograms (converters/observers/base.StreamingHistogram) of the token
maxima, the token minima and all values; nothing else is kept between batches.

What this leaves out: OS picks alpha by the loss of the model's final output with the whole network
quantized; an observer sees only its own tensor, so alpha minimises this tensor's quantize-dequantize
MSE instead (the rounding noise Delta^2 / 12 of each value inside the range plus the squared
clipping error of each value outside, over the value histogram).  A clipped range is taken only
when it lowers that MSE by more than 1 % (`MIN_GAIN`) over alpha = 1, so that on a tensor without
outlier tokens the observer returns the min/max range.  OS's fine stage (a gradient-based refinement
of the range from there) is left out too.
"""
from __future__ import annotations

import warnings

import numpy as np

from converters.observers import register_observer
from converters.observers.base import Observer, ObserverConfig, StreamingHistogram, _finite

# alpha grid: 1, then 1 - 10^-5 .. 1 - 0.1 (the outlier tokens are rare: the useful alphas sit near 1)
ALPHAS = np.concatenate([[1.0], 1.0 - np.geomspace(1e-5, 0.1, 41)])
MIN_GAIN = 0.99     # a clipped range must have MSE < MIN_GAIN x the alpha = 1 MSE


def token_extremes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (max, min) of an activation: channels on the last axis, or on axis 1 for rank 4.
    Non-finite values are ignored (a token with none finite gives NaN, which the histograms drop)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim <= 1:
        v = x.ravel()
        return v, v
    axis = 1 if x.ndim == 4 else -1
    if np.isfinite(x).all():
        return x.max(axis).ravel(), x.min(axis).ravel()
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # all-NaN tokens
        return np.nanmax(x, axis).ravel(), np.nanmin(x, axis).ravel()


def noise_mse(centers: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              qmin: int, qmax: int) -> np.ndarray:
    """Expected squared quantization error for every candidate range (lo[i], hi[i]): Delta^2 / 12 per
    value inside the range (the uniform rounding-noise model: bin centres cannot stand in for their
    samples when a bin is wider than the grid step), the squared distance to the range outside."""
    step = np.maximum((hi - lo) / (qmax - qmin), 1e-12)[:, None]
    below = np.maximum(lo[:, None] - centers[None, :], 0.0)
    above = np.maximum(centers[None, :] - hi[:, None], 0.0)
    inside = (below == 0) & (above == 0)
    err = np.where(inside, step ** 2 / 12.0, below ** 2 + above ** 2)
    return err @ counts


@register_observer
class TokenClipObserver(Observer):
    name = "tokenclip"

    def __init__(self, config: ObserverConfig):
        super().__init__(config)
        self.maxima = StreamingHistogram(config.bins)
        self.minima = StreamingHistogram(config.bins)
        self.values = StreamingHistogram(config.bins)
        self.alpha = 1.0            # the alpha the last range() chose

    def update(self, x) -> None:
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return
        tmax, tmin = token_extremes(x)
        self.maxima.update(tmax)
        self.minima.update(tmin)
        self.values.update(_finite(x))

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) for every alpha of ALPHAS."""
        hi = np.array([self.maxima.quantile(a) for a in ALPHAS])
        lo = np.array([self.minima.quantile(1.0 - a) for a in ALPHAS])
        hi[0], lo[0] = self.values.max, self.values.min      # alpha = 1: exactly min / max
        return np.minimum(lo, 0.0), np.maximum(hi, 0.0)

    def range(self, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
        h = self.values
        if h.total == 0:
            return 0.0, 0.0
        lo, hi = self.candidates()
        nz = h.counts > 0
        err = noise_mse(h.centers()[nz], h.counts[nz], lo, hi, qmin, qmax)
        i = int(np.argmin(err))
        if not err[i] < MIN_GAIN * err[0]:
            i = 0
        self.alpha = float(ALPHAS[i])
        return float(lo[i]), float(hi[i])
