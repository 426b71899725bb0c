"""Exp: elementwise e**x."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, need_float
from edgert.ops.base import Op, register


@register
class Exp(Op):
    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        return (np.exp(x),)
