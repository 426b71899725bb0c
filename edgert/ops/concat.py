"""Concat: join inputs along `axis` (required; negative allowed)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, norm_axis, same_dtype
from edgert.ops.base import Op, register


@register
class Concat(Op):
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
