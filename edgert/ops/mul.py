"""Mul: elementwise a * b with numpy (multidirectional) broadcasting."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Binary
from edgert.ops.base import register


@register
class Mul(Binary):
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def compute(self, a, b):
        if a.dtype == np.bool_:
            return np.logical_and(a, b)
        return np.multiply(a, b)
