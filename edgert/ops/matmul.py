"""MatMul (ONNX: numpy matmul semantics, broadcasting batch dims, 1-D operands promoted)."""
from __future__ import annotations

import numpy as np

from edgert.ops._geometry import (GEMM_TYPES, checked_run, matmul_shape, need_dtype, same_dtype,
                                  shape_of)
from edgert.ops._schema import Val
from edgert.ops.base import Op, register


@register
class MatMul(Op):
    INPUTS = (2, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        a, b = ins[0], ins[1]
        need_dtype(self, a, GEMM_TYPES, "A")
        need_dtype(self, b, GEMM_TYPES, "B")
        dt = same_dtype(self, ("A", a), ("B", b))
        return [Val(dt, matmul_shape(self, shape_of(a), shape_of(b)))]

    def run(self, a, b):
        checked_run(self, [a, b])
        return (np.matmul(a, b),)
