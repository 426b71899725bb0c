"""Unsqueeze: insert size-1 axes at `axes` (attribute, opset <13, or input, 13+), which index the
output (rank = input rank + len(axes); negative values count from the output's end)."""
from __future__ import annotations

from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


@register
class Unsqueeze(Op):
    def run(self, x, axes=None):
        x = need(self, x, "data")
        ax = int_list(self, axes if axes is not None else self.attr("axes"), "axes")
        if not ax:
            raise fail(self, "needs a non-empty axes attribute or input")
        r = x.ndim + len(ax)
        ax = set(norm_axes(self, ax, r))
        it = iter(x.shape)
        return (x.reshape([1 if i in ax else next(it) for i in range(r)]),)
