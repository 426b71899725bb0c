"""Round: elementwise round half to even (ONNX Round)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._util import need, need_float
from edgert.ops.base import register


@register
class Round(Unary):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    KINDS = FLOAT

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        return (np.round(x),)
