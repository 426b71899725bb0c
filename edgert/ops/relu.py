"""Relu: elementwise max(x, 0)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import Unary
from edgert.ops._util import need
from edgert.ops.base import register


@register
class Relu(Unary):
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def run(self, x):
        x = need(self, x, "X")
        return (np.maximum(x, x.dtype.type(0)),)
