"""ReduceMean: mean over `axes` (attribute before opset 18, optional input from 18 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1.  The mean of an empty set (undefined in
ONNX) is NaN for floats, 0 for integers."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM
from edgert.ops._reduce import ReduceOp
from edgert.ops._util import prod
from edgert.ops.base import register


@register
class ReduceMean(ReduceOp):
    KINDS = NUM

    def reduce(self, x, axes, keepdims):
        if prod(x.shape[a] for a in axes) == 0:
            zeros = np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
            return np.full_like(zeros, np.nan) if x.dtype.kind == "f" else zeros
        if np.issubdtype(x.dtype, np.floating):
            return np.mean(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
        return np.mean(x, axis=axes, keepdims=keepdims).astype(x.dtype)
