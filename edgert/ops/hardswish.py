"""HardSwish: x * max(0, min(1, x / 6 + 0.5)) (HardSigmoid with alpha 1/6, beta 0.5)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._util import need, need_float
from edgert.ops.base import register


@register
class HardSwish(Unary):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    KINDS = FLOAT

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        t = x.dtype.type
        return (x * np.clip(x * t(1.0 / 6.0) + t(0.5), t(0), t(1)),)
