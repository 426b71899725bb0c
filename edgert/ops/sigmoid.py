"""Sigmoid: 1 / (1 + exp(-x)), evaluated without overflow for large |x|."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._util import need, need_float
from edgert.ops.base import register


@register
class Sigmoid(Unary):
    KINDS = FLOAT
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        e = np.exp(-np.abs(x))          # in (0, 1]: never overflows
        one = x.dtype.type(1)
        return (np.where(x >= 0, one / (one + e), e / (one + e)).astype(x.dtype, copy=False),)
