"""Expand: broadcast the input against `shape` (bidirectionally: the result may be larger
than `shape`)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, int_list, need
from edgert.ops.base import Op, register


@register
class Expand(Op):
    def run(self, x, shape):
        x = need(self, x, "input")
        dims = int_list(self, need(self, shape, "shape"), "shape")
        out = broadcast_shape(self, x.shape, dims)
        return (np.array(np.broadcast_to(x, out)),)
