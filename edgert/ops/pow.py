"""Pow: elementwise x ** y; the output has X's dtype (ONNX: Y may have another numeric type)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM, Binary, kind_of
from edgert.ops._util import fail
from edgert.ops.base import register


@register
class Pow(Binary):
    KINDS = NUM
    SAME_DTYPE = False

    def scratch(self, ins, outs):
        # integer X: the power runs in 64 bits (uint64 / float64) at the output's size
        return outs[0].min_elements() * 8 if kind_of(outs[0].dtype) in ("i", "u") else 0

    def compute(self, x, y):
        if np.issubdtype(x.dtype, np.floating):
            # a float64 or int64 exponent must not upcast a float32 base
            return np.power(x, y.astype(x.dtype, copy=False))
        if np.issubdtype(y.dtype, np.integer):
            if np.any(y < 0):
                raise fail(self, "integer base with a negative integer exponent")
            # exact modulo 2^64, then wrapped to X's width (y keeps its value: no cast to X's type)
            u = np.power(x.astype(np.uint64), y.astype(np.uint64))
            return u.astype(x.dtype)
        with np.errstate(invalid="ignore"):     # NaN / inf -> int is undefined, as ONNX
            return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)
