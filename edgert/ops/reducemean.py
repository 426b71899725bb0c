"""ReduceMean: mean over `axes` (attribute before opset 18, optional input from 18 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._reduce import ReduceOp
from edgert.ops.base import register


@register
class ReduceMean(ReduceOp):
    def reduce(self, x, axes, keepdims):
        if np.issubdtype(x.dtype, np.floating):
            return np.mean(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
        return np.mean(x, axis=axes, keepdims=keepdims).astype(x.dtype)
