"""Clip: min(max(x, lo), hi).

Opset 6 gives `min` / `max` as float attributes (defaults -inf / +inf); opset 11+ as optional
scalar inputs (omitted = unbounded).  Both forms are accepted; inputs win over attributes.  An
attribute bound on an integer tensor is rounded inward and clamped to the dtype's range."""
from __future__ import annotations

import math

import numpy as np

from edgert.ops._elementwise import common_dtype, need_val, opt_val
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._util import fail, need
from edgert.ops.base import Op, register


@register
class Clip(Op):
    ATTRS = {"min": Attr("float"), "max": Attr("float")}      # opset 1-6
    IGNORED_ATTRS = frozenset({"consumed_inputs"})            # opset 1
    INPUTS = (1, 3)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "input")
        dt = x.dtype
        for i, name in ((1, "min"), (2, "max")):
            v = opt_val(ins, i)
            if v is None:
                continue
            dt = common_dtype(self, x, v, what=f"input and {name}") or dt
            if v.shape is not None and any(d is not None and d != 1 for d in v.shape):
                raise self.bad(f"{name} must be a scalar, got shape {fmt(v.shape)}")
        return [Val(dt, x.shape)]

    def _bound(self, v, attr_name, x):
        if v is None:
            a = self.attr(attr_name)
            return None if a is None else self._attr_bound(float(a), attr_name == "min", x.dtype)
        v = np.asarray(v)
        if v.size != 1:
            raise fail(self, f"{attr_name} must be a scalar, got shape {v.shape}")
        if v.dtype != x.dtype:
            raise fail(self, f"{attr_name} dtype {v.dtype} differs from input dtype {x.dtype}")
        return v.reshape(())

    @staticmethod
    def _attr_bound(a: float, lower: bool, dt: np.dtype):
        if dt.kind in "iu":
            info = np.iinfo(dt)
            a = math.ceil(a) if lower else math.floor(a)
            return dt.type(min(max(a, int(info.min)), int(info.max)))
        with np.errstate(over="ignore"):
            return dt.type(a)

    def run(self, x, lo=None, hi=None):
        x = need(self, x, "input")
        lo, hi = self._bound(lo, "min", x), self._bound(hi, "max", x)
        y = x
        if lo is not None:
            y = np.maximum(y, lo)
        if hi is not None:
            y = np.minimum(y, hi)     # hi < lo gives hi everywhere, as ONNX specifies
        return (np.array(y, dtype=x.dtype, copy=True) if y is x else y,)
