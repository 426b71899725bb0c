"""Div: elementwise a / b.  Integer division truncates toward zero (as C / ONNX Runtime)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM, Binary
from edgert.ops._util import fail
from edgert.ops.base import register


@register
class Div(Binary):
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1
    KINDS = NUM

    def compute(self, a, b):
        if np.issubdtype(a.dtype, np.floating):
            return np.divide(a, b)
        if np.any(b == 0):
            raise fail(self, "integer division by zero")
        with np.errstate(over="ignore"):            # INT_MIN / -1 wraps, as C
            q = np.floor_divide(a, b)
            # floor -> trunc: bump the quotient where the remainder is nonzero and signs differ
            fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
            return (q + fix.astype(q.dtype)).astype(a.dtype, copy=False)
