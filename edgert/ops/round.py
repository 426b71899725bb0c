"""Round: elementwise round half to even (ONNX Round)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, need_float
from edgert.ops.base import Op, register


@register
class Round(Op):
    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        return (np.round(x),)
