"""Where: condition ? X : Y with broadcasting over all three."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import check_kind, common_dtype, need_val
from edgert.ops._schema import Val, bcast
from edgert.ops._util import broadcast_shape, fail, need, same_dtype
from edgert.ops.base import Op, register


@register
class Where(Op):
    INPUTS = (3, 3)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        c, x, y = (need_val(self, ins, i, w) for i, w in enumerate(("condition", "X", "Y")))
        check_kind(self, c, "b", "condition")
        dt = common_dtype(self, x, y, what="X and Y")
        return [Val(dt, bcast(self, c.shape, x.shape, y.shape))]

    def run(self, cond, x, y):
        cond, x, y = need(self, cond, "condition"), need(self, x, "X"), need(self, y, "Y")
        if cond.dtype != np.bool_:
            raise fail(self, f"condition must be bool, got {cond.dtype}")
        same_dtype(self, x, y)
        broadcast_shape(self, cond.shape, x.shape, y.shape)
        return (np.where(cond, x, y),)
