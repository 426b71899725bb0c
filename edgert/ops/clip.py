"""Clip: min(max(x, lo), hi).

Opset 6 gives `min` / `max` as float attributes (defaults -inf / +inf); opset 11+ as optional
scalar inputs (omitted = unbounded).  Both forms are accepted; inputs win over attributes."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, need
from edgert.ops.base import Op, register


@register
class Clip(Op):
    def _bound(self, v, attr_name, x):
        if v is None:
            a = self.attr(attr_name)
            return None if a is None else x.dtype.type(a)
        v = np.asarray(v)
        if v.size != 1:
            raise fail(self, f"{attr_name} must be a scalar, got shape {v.shape}")
        if v.dtype != x.dtype:
            raise fail(self, f"{attr_name} dtype {v.dtype} differs from input dtype {x.dtype}")
        return v.reshape(())

    def run(self, x, lo=None, hi=None):
        x = need(self, x, "input")
        lo, hi = self._bound(lo, "min", x), self._bound(hi, "max", x)
        y = x
        if lo is not None:
            y = np.maximum(y, lo)
        if hi is not None:
            y = np.minimum(y, hi)     # hi < lo gives hi everywhere, as ONNX specifies
        return (np.array(y, dtype=x.dtype, copy=True) if y is x else y,)
