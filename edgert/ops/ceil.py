"""Ceil: elementwise ceiling."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, need_float
from edgert.ops.base import Op, register


@register
class Ceil(Op):
    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        return (np.ceil(x),)
