"""HardSigmoid: max(0, min(1, alpha * x + beta)); alpha 0.2, beta 0.5 by default."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, Unary
from edgert.ops._schema import Attr
from edgert.ops._util import need, need_float
from edgert.ops.base import register


@register
class HardSigmoid(Unary):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    KINDS = FLOAT
    ATTRS = {"alpha": Attr("float"), "beta": Attr("float")}
    IGNORED_ATTRS = frozenset({"consumed_inputs"})      # opset 1

    def __init__(self, node):
        super().__init__(node)
        self.alpha = float(self.attr("alpha", 0.2))
        self.beta = float(self.attr("beta", 0.5))

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        t = x.dtype.type
        return (np.clip(x * t(self.alpha) + t(self.beta), t(0), t(1)),)
