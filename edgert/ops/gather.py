"""Gather: take `indices` (int32/int64, negative = from the end) along `axis` (default 0)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, need, norm_axis
from edgert.ops.base import Op, register


@register
class Gather(Op):
    def run(self, x, indices):
        x, idx = need(self, x, "data"), need(self, indices, "indices")
        if x.ndim == 0:
            raise fail(self, "data must have rank >= 1")
        if not np.issubdtype(idx.dtype, np.integer):
            raise fail(self, f"indices must be int32/int64, got {idx.dtype}")
        axis = norm_axis(self, self.attr("axis", 0), x.ndim)
        n = x.shape[axis]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise fail(self, f"indices out of range [-{n}, {n - 1}] on axis {axis}")
        return (np.take(x, np.where(idx < 0, idx + n, idx), axis=axis),)
