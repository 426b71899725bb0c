"""Div: elementwise a / b.  Integer division truncates toward zero (as C / ONNX Runtime)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, fail, need, same_dtype
from edgert.ops.base import Op, register


@register
class Div(Op):
    def run(self, a, b):
        a, b = need(self, a, "A"), need(self, b, "B")
        same_dtype(self, a, b)
        broadcast_shape(self, a.shape, b.shape)
        if np.issubdtype(a.dtype, np.floating):
            return (np.divide(a, b),)
        if np.issubdtype(a.dtype, np.integer):
            if np.any(b == 0):
                raise fail(self, "integer division by zero")
            q = np.floor_divide(a, b)
            # floor -> trunc: bump the quotient where the remainder is nonzero and signs differ
            fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
            return ((q + fix.astype(q.dtype)).astype(a.dtype, copy=False),)
        raise fail(self, f"unsupported dtype {a.dtype}")
