"""GlobalAveragePool: mean over every spatial axis (2..rank-1), kept as size 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, need_float, rank_at_least
from edgert.ops.base import Op, register


@register
class GlobalAveragePool(Op):
    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        rank_at_least(self, x, 3)
        return (np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype),)
