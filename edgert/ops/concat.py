"""Concat: join inputs along `axis` (required; negative allowed)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._shape_ops import SAT, same_dtype as one_dtype
from edgert.ops._util import fail, norm_axis, same_dtype
from edgert.ops.base import VARIADIC, Op, register


@register
class Concat(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {"axis": Attr("int", required=True)}   # required since opset 4
    INPUTS = (1, VARIADIC)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        if any(v is None for v in ins):
            raise self.bad("an input is omitted")
        dtype = one_dtype(self, ins)
        ranks = {len(v.shape) for v in ins if v.shape is not None}
        if len(ranks) > 1:
            raise self.bad(f"inputs have different ranks: {', '.join(fmt(v.shape) for v in ins)}")
        if not ranks:
            return [Val(dtype, None)]
        r = ranks.pop()
        axis = int(self.attr("axis"))
        if not -r <= axis < r:
            raise self.bad(f"axis {axis} is out of range for rank {r}")
        axis %= r
        out: list[int | None] = []
        for i in range(r):
            dims = [None if v.shape is None else v.shape[i] for v in ins]
            if i == axis:
                total = None if any(d is None for d in dims) else sum(dims)
                out.append(None if total is None else min(total, SAT))
                continue
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise self.bad(f"shapes {', '.join(fmt(v.shape) for v in ins)} differ off "
                               f"axis {axis}")
            out.append(known.pop() if known else None)
        return [Val(dtype, tuple(out))]

    def run(self, *xs):
        if not xs or any(x is None for x in xs):
            raise fail(self, "needs at least one input and no omitted inputs")
        if self.attr("axis") is None:
            raise fail(self, "attribute 'axis' is required")
        xs = [np.asarray(x) for x in xs]
        same_dtype(self, *xs)
        r = xs[0].ndim
        if any(x.ndim != r for x in xs):
            raise fail(self, f"inputs have different ranks: {[x.shape for x in xs]}")
        axis = norm_axis(self, self.attr("axis"), r)
        for x in xs:
            if x.shape[:axis] + x.shape[axis + 1:] != xs[0].shape[:axis] + xs[0].shape[axis + 1:]:
                raise fail(self, f"shapes {[x.shape for x in xs]} differ off axis {axis}")
        return (np.concatenate(xs, axis=axis),)
