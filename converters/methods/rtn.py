"""`rtn`: round to nearest with the plain absmax scale of each row."""
from __future__ import annotations

import numpy as np

from converters.methods import register_method
from converters.methods.base import Scheme, WeightMethod


@register_method
class Rtn(WeightMethod):
    name = "rtn"

    def scales(self, rows: np.ndarray, scheme: Scheme, scale_dtype: str) -> np.ndarray:
        return scheme.scale_for_absmax(np.abs(rows).max(axis=1).astype(np.float64))
