"""Tile: repeat the input `repeats[i]` times along axis i (repeats: 1-D int64, one per axis)."""
from __future__ import annotations

import numpy as np

from edgert.errors import GraphError

from edgert.ops._schema import Val, fmt
from edgert.ops._shape_ops import dprod, int_vals, kind_of, list_len, unknown_dims
from edgert.ops._util import fail, int_list, need
from edgert.ops.base import Op, register


@register
class Tile(Op):
    INPUTS = (2, 2)         # the opset-1 form Tile(input, tiles, axis) is not supported

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, rv = ins[0], ins[1]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        reps = int_vals(self, rv, "repeats")
        n = list_len(self, rv, "repeats")
        if reps is not None and any(r < 0 for r in reps):
            raise self.bad(f"repeats {reps} must be non-negative")
        if shape is None:
            return [Val(dtype, unknown_dims(n))]
        if n is not None and n != len(shape):
            raise self.bad(f"repeats has {n} entries for input shape {fmt(shape)}")
        if reps is None:
            return [Val(dtype, tuple(0 if d == 0 else None for d in shape))]
        return [Val(dtype, tuple(dprod([d, r]) for d, r in zip(shape, reps)))]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        """np.tile repeats one axis at a time; every stage before the last is a temporary."""
        x, rv = ins[0], ins[1]
        if x is None or x.shape is None or rv is None or rv.value is None:
            return 0
        try:
            reps = int_vals(self, rv, "repeats")
        except GraphError:           # infer reports it
            return 0
        if reps is None or len(reps) != len(x.shape):
            return 0
        k = kind_of(x.dtype)
        item = np.dtype(x.dtype).itemsize if k is not None else 1
        n = dprod([1 if d is None else d for d in x.shape]) or 0
        stages = []
        for r in reps:
            if r != 1:
                n = dprod([n, r])
                stages.append(n)
        return max(stages[:-1], default=0) * item

    def run(self, x, repeats):
        x = need(self, x, "input")
        reps = int_list(self, need(self, repeats, "repeats"), "repeats")
        if len(reps) != x.ndim or any(r < 0 for r in reps):
            raise fail(self, f"repeats {reps} must be {x.ndim} non-negative ints "
                             f"for shape {x.shape}")
        try:
            return (np.tile(x, reps),)
        except ValueError as e:             # dims past numpy's limits
            raise fail(self, f"cannot tile {x.shape} by {reps}: {e}") from None
