"""ReduceSum: sum over `axes` (attribute before opset 13, optional input from 13 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM
from edgert.ops._reduce import ReduceOp
from edgert.ops.base import register


@register
class ReduceSum(ReduceOp):
    KINDS = NUM

    def reduce(self, x, axes, keepdims):
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
