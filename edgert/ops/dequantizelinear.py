"""DequantizeLinear: y = (x − zero_point) · scale, per-tensor, per-axis or blocked (opset 21)."""
from __future__ import annotations

import numpy as np

from edgert.ops.base import Op, register
from edgert.ops.quantizelinear import broadcast_param


@register
class DequantizeLinear(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int(self.attr("axis", 1))
        self.block_size = int(self.attr("block_size", 0))

    def run(self, x, x_scale, x_zero_point=None):
        scale = broadcast_param(x_scale, x.shape, self.axis, self.block_size)
        zp = broadcast_param(x_zero_point, x.shape, self.axis, self.block_size)
        xi = x.astype(np.int32) if x.dtype.itemsize < 4 else x.astype(np.int64)
        if zp is not None:
            xi = xi - zp.astype(xi.dtype)
        out_dtype = scale.dtype if scale.dtype.kind == "f" else np.float32
        return ((xi.astype(out_dtype) * scale).astype(out_dtype, copy=False),)
