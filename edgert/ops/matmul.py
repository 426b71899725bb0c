"""MatMul (ONNX: numpy matmul semantics, broadcasting batch dims, 1-D operands promoted)."""
from __future__ import annotations

import numpy as np

from edgert.ops.base import Op, register


@register
class MatMul(Op):
    def run(self, a, b):
        return (np.matmul(a, b),)
