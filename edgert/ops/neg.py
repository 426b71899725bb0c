"""Neg: elementwise -x."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need
from edgert.ops.base import Op, register


@register
class Neg(Op):
    def run(self, x):
        x = need(self, x, "X")
        return (np.negative(x),)
