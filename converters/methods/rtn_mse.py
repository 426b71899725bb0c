"""`rtn_mse`: round to nearest, with each row's clipping ratio searched on a grid to minimise
‖W − Q(W)‖² (scales rounded to the storage dtype inside the search, so the error is the real one).

Ratio 1.0 (plain absmax) is always in the grid, so the result is never worse than `rtn`."""
from __future__ import annotations

import numpy as np

from converters.methods import register_method
from converters.methods.base import Scheme, WeightMethod, round_scale


@register_method
class RtnMse(WeightMethod):
    name = "rtn_mse"
    steps = 51

    def grid(self, scheme: Scheme) -> np.ndarray:
        # low widths want much more clipping (1-bit optimum for a Gaussian is ~mean|w|, ~0.45 absmax)
        low = 0.5 if scheme.bits >= 5 else 0.3 if scheme.bits >= 3 else 0.1
        return np.linspace(low, 1.0, self.steps)

    def scales(self, rows: np.ndarray, scheme: Scheme, scale_dtype: str) -> np.ndarray:
        rows = rows.astype(np.float32)
        absmax = np.abs(rows).max(axis=1).astype(np.float64)
        best_scale = scheme.scale_for_absmax(absmax)
        best_err = np.full(rows.shape[0], np.inf)
        for ratio in self.grid(scheme)[::-1]:
            s = round_scale(scheme.scale_for_absmax(absmax * ratio), scale_dtype)[:, None]
            err = ((rows - scheme.quantize(rows, s).astype(np.float32) * s) ** 2).sum(axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, s[:, 0], best_scale)
        return best_scale
