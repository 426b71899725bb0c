"""ReduceMax: max over `axes` (attribute before opset 18, optional input from 18 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._reduce import ReduceOp
from edgert.ops._util import fail
from edgert.ops.base import register


@register
class ReduceMax(ReduceOp):
    def reduce(self, x, axes, keepdims):
        if x.size == 0:
            raise fail(self, f"cannot take the max of an empty tensor (shape {x.shape})")
        return np.max(x, axis=axes, keepdims=keepdims)
