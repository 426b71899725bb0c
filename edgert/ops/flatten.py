"""Flatten: to 2-D [prod(shape[:axis]), prod(shape[axis:])]; axis in [-r, r], default 1."""
from __future__ import annotations

from edgert.ops._util import fail, need, prod
from edgert.ops.base import Op, register


@register
class Flatten(Op):
    def run(self, x):
        x = need(self, x, "input")
        r = x.ndim
        axis = int(self.attr("axis", 1))
        if not -r <= axis <= r:
            raise fail(self, f"axis {axis} is out of range for rank {r}")
        if axis < 0:
            axis += r
        return (x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])),)
