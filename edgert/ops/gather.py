"""Gather: take `indices` (signed integers, ONNX int32/int64; negative = from the end) along
`axis` (default 0)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import MAX_RANK, SIGNED, check_kind, need_kind, need_val
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._schema import norm_axis as static_axis
from edgert.ops._util import fail, need, norm_axis
from edgert.ops.base import Op, register


@register
class Gather(Op):
    ATTRS = {"axis": Attr("int")}
    INPUTS = (2, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, idx = need_val(self, ins, 0, "data"), need_val(self, ins, 1, "indices")
        check_kind(self, idx, SIGNED, "indices")
        if x.shape is None:
            return [Val(x.dtype, None)]
        if not x.shape:
            raise self.bad("data must have rank >= 1")
        axis = static_axis(self, int(self.attr("axis", 0)), len(x.shape))
        n = x.shape[axis]
        if n is not None:
            a = idx.value
            if isinstance(a, np.ndarray) and a.size and a.dtype.kind in "iu":
                lo, hi = int(a.min()), int(a.max())
                if lo < -n or hi >= n:
                    raise self.bad(f"indices {lo if lo < -n else hi} out of range [-{n}, {n - 1}] "
                                   f"on axis {axis} of data {fmt(x.shape)}")
            elif n == 0 and idx.shape is not None and all(d is not None for d in idx.shape) \
                    and all(idx.shape):
                raise self.bad(f"gathers from the empty axis {axis} of data {fmt(x.shape)}")
        if idx.shape is None:
            return [Val(x.dtype, None)]
        out = tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:])
        if len(out) > MAX_RANK:
            raise self.bad(f"output rank {len(out)} is over {MAX_RANK}")
        return [Val(x.dtype, out)]

    def run(self, x, indices):
        x, idx = need(self, x, "data"), need(self, indices, "indices")
        if x.ndim == 0:
            raise fail(self, "data must have rank >= 1")
        need_kind(self, idx, SIGNED, "indices")
        axis = norm_axis(self, self.attr("axis", 0), x.ndim)
        n = x.shape[axis]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise fail(self, f"indices out of range [-{n}, {n - 1}] on axis {axis}")
        return (np.take(x, np.where(idx < 0, idx + n, idx), axis=axis),)
