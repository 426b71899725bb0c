"""Mul: elementwise a * b with numpy (multidirectional) broadcasting."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, need, same_dtype
from edgert.ops.base import Op, register


@register
class Mul(Op):
    def run(self, a, b):
        a, b = need(self, a, "A"), need(self, b, "B")
        same_dtype(self, a, b)
        broadcast_shape(self, a.shape, b.shape)
        if a.dtype == np.bool_:
            return (np.logical_and(a, b),)
        return (np.multiply(a, b),)
