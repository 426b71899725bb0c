"""GlobalAveragePool: mean over every spatial axis (2..rank-1), kept as size 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, check_kind, need_val
from edgert.ops._schema import Val, fmt
from edgert.ops._util import need, need_float, rank_at_least
from edgert.ops.base import Op, register


@register
class GlobalAveragePool(Op):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "X")
        check_kind(self, x, FLOAT, "X")
        if x.shape is None:
            return [Val(x.dtype, None)]
        if len(x.shape) < 3:
            raise self.bad(f"X must have rank >= 3 (N, C, spatial...), got {fmt(x.shape)}")
        return [Val(x.dtype, tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))]

    def run(self, x):
        x = need(self, x, "X")
        need_float(self, x)
        rank_at_least(self, x, 3)
        axes = tuple(range(2, x.ndim))
        if any(x.shape[a] == 0 for a in axes):          # empty window: NaN, without a warning
            return (np.full(x.shape[:2] + (1,) * len(axes), np.nan, dtype=x.dtype),)
        return (np.mean(x, axis=axes, keepdims=True, dtype=x.dtype),)
