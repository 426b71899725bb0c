"""Range: start + i * delta for i in [0, max(ceil((limit - start) / delta), 0)), in the
inputs' dtype."""
from __future__ import annotations

import math

import numpy as np

from edgert.ops._util import fail, need, same_dtype
from edgert.ops.base import Op, register


@register
class Range(Op):
    def run(self, start, limit, delta):
        start, limit, delta = (need(self, start, "start"), need(self, limit, "limit"),
                               need(self, delta, "delta"))
        for name, v in (("start", start), ("limit", limit), ("delta", delta)):
            if v.size != 1:
                raise fail(self, f"{name} must be a scalar, got shape {v.shape}")
        same_dtype(self, start, limit, delta)
        dt = start.dtype
        s, lim, d = start.reshape(()), limit.reshape(()), delta.reshape(())
        if d == 0:
            raise fail(self, "delta is 0")
        if np.issubdtype(dt, np.integer):
            n = max(-(-(int(lim) - int(s)) // int(d)), 0)
        else:
            n = max(math.ceil((float(lim) - float(s)) / float(d)), 0)
        return ((s + np.arange(n, dtype=dt) * d).astype(dt, copy=False),)
