"""Pow: elementwise x ** y; the output has X's dtype (ONNX: Y may have another numeric type)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, fail, need
from edgert.ops.base import Op, register


@register
class Pow(Op):
    def run(self, x, y):
        x, y = need(self, x, "X"), need(self, y, "Y")
        broadcast_shape(self, x.shape, y.shape)
        if np.issubdtype(x.dtype, np.floating):
            # a float64 or int64 exponent must not upcast a float32 base
            return (np.power(x, y.astype(x.dtype, copy=False)),)
        if np.issubdtype(x.dtype, np.integer):
            if np.issubdtype(y.dtype, np.integer):
                if np.any(y < 0):
                    raise fail(self, "integer base with a negative integer exponent")
                return (np.power(x, y.astype(x.dtype, copy=False)),)
            return (np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype),)
        raise fail(self, f"unsupported dtype {x.dtype}")
