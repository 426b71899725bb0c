"""ReduceMax: max over `axes` (attribute before opset 18, optional input from 18 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1.  The max of an empty set is the dtype's
lowest value (-inf for floats, False for bool), as ONNX (opset 18+)."""
from __future__ import annotations

import numpy as np

from edgert.ops._reduce import ReduceOp
from edgert.ops.base import register


@register
class ReduceMax(ReduceOp):
    def reduce(self, x, axes, keepdims):
        if x.dtype.kind == "f":
            low = -np.inf
        elif x.dtype.kind == "b":
            low = False
        else:
            low = np.iinfo(x.dtype).min
        return np.max(x, axis=axes, keepdims=keepdims, initial=low)
