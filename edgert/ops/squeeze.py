"""Squeeze: drop size-1 axes: `axes` attribute (opset <13) or input (13+); none = every
size-1 axis."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, int_list, need, norm_axes
from edgert.ops.base import Op, register


@register
class Squeeze(Op):
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
