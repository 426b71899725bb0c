"""Expand: broadcast the input against `shape` (bidirectionally: the result may be larger
than `shape`)."""
from __future__ import annotations

import numpy as np

from edgert.ops._schema import Val, bcast
from edgert.ops._shape_ops import int_vals, list_len, unknown_dims
from edgert.ops._util import broadcast_shape, fail, int_list, need
from edgert.ops.base import Op, register


@register
class Expand(Op):
    INPUTS = (2, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, sv = ins[0], ins[1]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        dims = int_vals(self, sv, "shape")
        if dims is not None:
            if any(d < 0 for d in dims):
                raise self.bad(f"shape {dims} has a negative dim")
            return [Val(dtype, bcast(self, shape, tuple(dims)))]
        n = list_len(self, sv, "shape")
        if shape is None or n is None:
            return [Val(dtype, None)]
        lead = unknown_dims(n - len(shape)) if n > len(shape) else ()
        if lead is None:
            return [Val(dtype, None)]
        # a known input dim other than 1 survives broadcasting (or the node fails at run time)
        out = list(lead) + [None if d == 1 else d for d in shape]
        return [Val(dtype, tuple(out))]

    def run(self, x, shape):
        x = need(self, x, "input")
        dims = int_list(self, need(self, shape, "shape"), "shape")
        if any(d < 0 for d in dims):
            raise fail(self, f"shape {dims} has a negative dim")
        out = broadcast_shape(self, x.shape, dims)
        try:
            return (np.array(np.broadcast_to(x, out)),)
        except ValueError as e:             # dims past numpy's limits
            raise fail(self, f"cannot expand {x.shape} to {dims}: {e}") from None
