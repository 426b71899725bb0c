"""Min: elementwise minimum of one or more inputs with broadcasting
(NaN propagates, as ONNX Runtime)."""
from __future__ import annotations

import functools

import numpy as np

from edgert.ops._util import broadcast_shape, fail, same_dtype
from edgert.ops.base import Op, register


@register
class Min(Op):
    def run(self, *xs):
        if not xs or any(x is None for x in xs):
            raise fail(self, "needs at least one input and no omitted inputs")
        xs = [np.asarray(x) for x in xs]
        same_dtype(self, *xs)
        shape = broadcast_shape(self, *(x.shape for x in xs))
        out = functools.reduce(np.minimum, xs)
        return (np.array(np.broadcast_to(out, shape)),)
