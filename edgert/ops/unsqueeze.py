"""Unsqueeze: insert size-1 axes at `axes` (attribute, opset <13, or input, 13+), which index the
output (rank = input rank + len(axes); negative values count from the output's end)."""
from __future__ import annotations

from typing import ClassVar

from edgert.ops._schema import Attr, Val, norm_axes as check_axes
from edgert.ops._shape_ops import axes_of, inp, unknown_dims
from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


@register
class Unsqueeze(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    # required in opsets 1-11, an input since 13, so not required here
    ATTRS: ClassVar[dict[str, Attr]] = {"axes": Attr("ints")}
    INPUTS = (1, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, av = ins[0], inp(ins, 1)
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        if av is None and self.attr("axes") is None:
            raise self.bad("needs an axes attribute or input")
        ax, n = axes_of(self, av)
        if n == 0:
            raise self.bad("needs a non-empty axes attribute or input")
        if shape is None or n is None:
            return [Val(dtype, None)]
        r = len(shape) + n
        if ax is None:
            return [Val(dtype, unknown_dims(r))]
        if any(not -r <= a < r for a in ax):
            raise self.bad(f"axes {ax} are out of range for output rank {r}")
        axs = set(check_axes(self, ax, r))
        it = iter(shape)
        return [Val(dtype, tuple(1 if i in axs else next(it) for i in range(r)))]

    def run(self, x, axes=None):
        x = need(self, x, "data")
        ax = int_list(self, axes if axes is not None else self.attr("axes"), "axes")
        if not ax:
            raise fail(self, "needs a non-empty axes attribute or input")
        r = x.ndim + len(ax)
        ax = set(norm_axes(self, ax, r))
        it = iter(x.shape)
        return (x.reshape([1 if i in ax else next(it) for i in range(r)]),)
