"""ReduceMax: max over `axes` (attribute before opset 18, optional input from 18 on).

No axes (or an empty axes input) reduces every axis, unless noop_with_empty_axes=1, which
returns the input unchanged.  keepdims defaults to 1."""
from __future__ import annotations

import numpy as np

from edgert.ops._reduce import reduce_axes
from edgert.ops._util import fail
from edgert.ops.base import Op, register


def _reduce(op, x, ax, keep):
    if x.size == 0:
        raise fail(op, f"cannot take the max of an empty tensor (shape {x.shape})")
    return np.max(x, axis=ax, keepdims=keep)


@register
class ReduceMax(Op):
    def run(self, x, axes=None):
        x, ax = reduce_axes(self, x, axes)
        if ax is None:
            return (x.copy(),)
        keep = bool(self.attr("keepdims", 1))
        return (_reduce(self, x, ax, keep),)
