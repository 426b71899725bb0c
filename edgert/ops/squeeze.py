"""Squeeze: drop size-1 axes: `axes` attribute (opset <13) or input (13+); none = every
size-1 axis."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._schema import Attr, Val, fmt, norm_axes as check_axes
from edgert.ops._shape_ops import axes_of, inp
from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


@register
class Squeeze(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {"axes": Attr("ints")}    # opsets 1-11 (an input since 13)
    INPUTS = (1, 2)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, av = ins[0], inp(ins, 1)
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        ax, n = axes_of(self, av)
        if ax is None:
            if av is not None:                       # axes input of unknown value
                if shape is None or n is None:
                    return [Val(dtype, None)]
                if n > len(shape):
                    raise self.bad(f"{n} axes to squeeze from rank {len(shape)}")
                return [Val(dtype, (None,) * (len(shape) - n))]
            if shape is None or any(d is None for d in shape):
                return [Val(dtype, None)]            # which dims are 1 is not known
            return [Val(dtype, tuple(d for d in shape if d != 1))]
        if shape is None:
            return [Val(dtype, None)]
        r = len(shape)
        if any(not -r <= a < r for a in ax):
            raise self.bad(f"axes {ax} are out of range for rank {r}")
        axs = check_axes(self, ax, r)
        bad = [a for a in axs if shape[a] is not None and shape[a] != 1]
        if bad:
            raise self.bad(f"cannot squeeze axes {bad} of shape {fmt(shape)} (size != 1)")
        return [Val(dtype, tuple(d for i, d in enumerate(shape) if i not in axs))]

    def run(self, x, axes=None):
        x = need(self, x, "data")
        ax = int_list(self, axes if axes is not None else self.attr("axes"), "axes")
        if ax is None:
            return (x.reshape([d for d in x.shape if d != 1]),)
        ax = norm_axes(self, ax, x.ndim)
        bad = [a for a in ax if x.shape[a] != 1]
        if bad:
            raise fail(self, f"cannot squeeze axes {bad} of shape {x.shape} (size != 1)")
        return (np.squeeze(x, axis=tuple(ax)),)
