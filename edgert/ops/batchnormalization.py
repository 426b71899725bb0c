"""BatchNormalization, inference mode: y = (x - mean) / sqrt(var + epsilon) * scale + B over
channel axis 1.  training_mode=1 (opset 14+) raises UnsupportedOp."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, need, need_float, rank_at_least, unsupported
from edgert.ops.base import Op, register


@register
class BatchNormalization(Op):
    def __init__(self, node):
        super().__init__(node)
        if int(self.attr("training_mode", 0)):
            raise unsupported(self, "training_mode=1 is not supported (inference only)")
        self.eps = float(self.attr("epsilon", 1e-5))

    def run(self, x, scale, b, mean, var):
        x = need(self, x, "X")
        need_float(self, x)
        rank_at_least(self, x, 2)
        c = x.shape[1]
        params = []
        for name, v in (("scale", scale), ("B", b), ("input_mean", mean), ("input_var", var)):
            v = need(self, v, name)
            if v.shape != (c,):
                raise fail(self, f"{name} must have shape ({c},), got {v.shape}")
            params.append(v.astype(np.float64))
        s, bias, m, v = params
        # fold into one multiply-add per channel (computed in float64, applied in x's dtype)
        a = s / np.sqrt(v + self.eps)
        shift = bias - m * a
        bshape = (1, c) + (1,) * (x.ndim - 2)
        return (x * a.astype(x.dtype).reshape(bshape) + shift.astype(x.dtype).reshape(bshape),)
