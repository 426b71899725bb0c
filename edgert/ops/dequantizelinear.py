"""DequantizeLinear: y = (x − zero_point) · scale, per-tensor, per-axis or blocked (opset 21)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._geometry import (check_zero_point, checked_run, dtype_of, itemsize, need_dtype,
                                  prod_lb, shape_of)
from edgert.ops._schema import Attr, Val
from edgert.ops.base import Op, register
from edgert.ops.quantizelinear import broadcast_param, check_qparams

DQ_TYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32"})


@register
class DequantizeLinear(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {
        "axis": Attr("int"),
        "block_size": Attr("int", lo=0),
    }
    INPUTS = (2, 3)

    def __init__(self, node):
        super().__init__(node)
        self.axis = int(self.attr("axis", 1))
        self.block_size = int(self.attr("block_size", 0))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, s = ins[0], ins[1]
        zp = ins[2] if len(ins) > 2 else None
        need_dtype(self, x, DQ_TYPES, "x")
        check_zero_point(self, zp, "x_zero_point", DQ_TYPES, ("x", x))
        check_qparams(self, x, s, zp, ("x_scale", "x_zero_point"), float32=False)
        return [Val(dtype_of(s), shape_of(x))]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        x = ins[0]
        wide = 8 if itemsize(dtype_of(x), 1) >= 4 else 4    # x widened to int32 / int64
        return wide * prod_lb(shape_of(x) or ())

    def run(self, x, x_scale, x_zero_point=None):
        checked_run(self, [x, x_scale, x_zero_point], (1, 2))
        scale = broadcast_param(x_scale, x.shape, self.axis, self.block_size)
        zp = broadcast_param(x_zero_point, x.shape, self.axis, self.block_size)
        xi = x.astype(np.int32) if x.dtype.itemsize < 4 else x.astype(np.int64)
        if zp is not None:
            xi = xi - zp.astype(xi.dtype)
        out_dtype = scale.dtype if scale.dtype.kind == "f" else np.float32
        with np.errstate(over="ignore"):
            return ((xi.astype(out_dtype) * scale).astype(out_dtype, copy=False),)
