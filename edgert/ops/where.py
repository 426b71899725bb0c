"""Where: condition ? X : Y with broadcasting over all three."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, fail, need, same_dtype
from edgert.ops.base import Op, register


@register
class Where(Op):
    def run(self, cond, x, y):
        cond, x, y = need(self, cond, "condition"), need(self, x, "X"), need(self, y, "Y")
        if cond.dtype != np.bool_:
            raise fail(self, f"condition must be bool, got {cond.dtype}")
        same_dtype(self, x, y)
        broadcast_shape(self, cond.shape, x.shape, y.shape)
        return (np.where(cond, x, y),)
