"""An online latency model per (stage, variant): runtime_ms ≈ a + b·cams, learnt from measurements.

The deadline policy chooses per frame how much work fits before the frame's deadline, so it needs a
prediction for configurations it has not run lately (fewer cameras, the other variant) and a
conservative figure, not a mean.  No runtime constant is baked in: each key keeps an exponentially
forgotten weighted least-squares fit (forgetting lets it follow thermal throttling or load from other
processes), and a window of prediction ratios (measured / predicted, taken before each update, so they
are honest out-of-sample errors) whose upper quantile turns the mean into a conservative estimate.

The first `warmup` observations of a key stand in only until the next one arrives: a session's
first run pays one-off costs (ONNX Runtime allocates its arena and picks kernels; the BEV package's
first fuse measured 1.3-1.5x its steady state), and a fit anchored on it makes the policy shun that
variant for good.

Until a key has seen two distinct camera counts the slope is not identifiable; the fit then splits
the mean between intercept and per-camera cost by `prior_intercept_share` (an assumption about the
shape, not about the speed).  A key never measured falls back to another variant of the same stage.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgert.errors import InputError


@dataclass(frozen=True)
class LatencyOptions:
    forgetting: float = 0.97          # weight kept by old samples per new one (~33-sample memory)
    quantile: float = 0.9             # the conservative estimate's quantile (MLPerf reports p90)
    window: int = 64                  # prediction ratios kept for the quantile
    min_ratios: int = 5               # below this, the conservative estimate uses the worst ratio seen
    prior_intercept_share: float = 0.25
    warmup: int = 1                   # first observations per key replaced by the next (one-off start-up cost)

    def __post_init__(self) -> None:
        if not 0.5 <= self.forgetting <= 1.0:
            raise InputError(f"latency forgetting factor must be in [0.5, 1], got {self.forgetting}")
        if not 0.0 < self.quantile < 1.0:
            raise InputError(f"latency quantile must be in (0, 1), got {self.quantile}")


@dataclass
class _Fit:
    """Exponentially weighted sums for the least-squares line y = a + b·x."""
    sw: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    count: int = 0
    last_seen: int = 0                 # the model's observation counter at this key's latest observation
    xs_seen: set[int] = field(default_factory=set)
    ratios: deque = field(default_factory=deque)

    def add(self, x: float, y: float, forgetting: float) -> None:
        self.sw, self.sx, self.sy = self.sw * forgetting + 1, self.sx * forgetting + x, self.sy * forgetting + y
        self.sxx, self.sxy = self.sxx * forgetting + x * x, self.sxy * forgetting + x * y
        self.count += 1
        self.xs_seen.add(int(x))

    def line(self, prior_intercept_share: float) -> tuple[float, float]:
        mx, my = self.sx / self.sw, self.sy / self.sw
        var = self.sxx / self.sw - mx * mx
        if len(self.xs_seen) >= 2 and var > 1e-9:
            b = (self.sxy / self.sw - mx * my) / var
            b = max(b, 0.0)                        # more cameras never cost less
            return my - b * mx, b
        a = prior_intercept_share * my
        return a, (my - a) / mx if mx > 0 else 0.0


class LatencyModel:
    """`observe` measured runtimes; `predict_ms` a mean or conservative runtime for a configuration."""

    def __init__(self, options: LatencyOptions | None = None):
        self.options = options or LatencyOptions()
        self._fits: dict[tuple[str, str], _Fit] = {}
        self.observations = 0

    def observe(self, stage: str, variant: str, n_cams: int, latency_ms: float) -> None:
        if latency_ms < 0 or not np.isfinite(latency_ms):
            raise InputError(f"latency of {stage}/{variant} must be finite and >= 0, got {latency_ms}")
        self.observations += 1
        fit = self._fits.get((stage, variant))
        if fit is None or fit.count <= self.options.warmup:
            # nothing yet, or only start-up measurements: this one replaces them (no ratio: the
            # start-up one predicts nothing)
            fit = self._fits[(stage, variant)] = _Fit(count=fit.count if fit else 0)
        else:
            mean = self._mean(fit, n_cams)
            if mean > 0:
                fit.ratios.append(latency_ms / mean)
                while len(fit.ratios) > self.options.window:
                    fit.ratios.popleft()
        fit.add(float(n_cams), float(latency_ms), self.options.forgetting)
        fit.last_seen = self.observations

    def since(self, stage: str, variant: str) -> int | None:
        """How many observations (of any key) arrived since this key's latest; None if never measured."""
        fit = self._fits.get((stage, variant))
        return None if fit is None else self.observations - fit.last_seen

    def known(self, stage: str, variant: str) -> bool:
        return (stage, variant) in self._fits

    def samples(self, stage: str, variant: str) -> int:
        fit = self._fits.get((stage, variant))
        return fit.count if fit else 0

    def coefficients(self, stage: str, variant: str) -> tuple[float, float] | None:
        """(a_ms, b_ms_per_cam) of the current fit, or None if never measured."""
        fit = self._fits.get((stage, variant))
        return fit.line(self.options.prior_intercept_share) if fit else None

    def predict_ms(self, stage: str, variant: str, n_cams: int, conservative: bool = False) -> float | None:
        """Predicted runtime; `conservative` scales the mean by the upper quantile of past prediction
        ratios.  None when nothing of this stage was ever measured."""
        fit = self._fits.get((stage, variant))
        if fit is None:
            others = [f for (s, _), f in self._fits.items() if s == stage]
            if not others:
                return None
            fit = max(others, key=lambda f: f.count)
        mean = self._mean(fit, n_cams)
        if not conservative:
            return mean
        return mean * max(1.0, self._ratio_quantile(fit))

    def _mean(self, fit: _Fit, n_cams: int) -> float:
        a, b = fit.line(self.options.prior_intercept_share)
        return max(0.0, a + b * n_cams)

    def _ratio_quantile(self, fit: _Fit) -> float:
        if not fit.ratios:
            return 1.0
        r = np.fromiter(fit.ratios, float)
        if len(r) < self.options.min_ratios:
            return float(r.max())
        return float(np.quantile(r, self.options.quantile))
