"""Range: start + i * delta for i in [0, max(ceil((limit - start) / delta), 0)), in the
inputs' dtype (numeric, all three the same).  The count is computed exactly for integers and in
float64 for floats, the same way statically and at run time."""
from __future__ import annotations

import math

import numpy as np

from edgert.ops._elementwise import NUM, check_alloc, check_kind, common_dtype, need_kind, need_val
from edgert.ops._schema import Val, check_dims, fmt
from edgert.ops._util import fail, need, same_dtype
from edgert.ops.base import Op, register

_NAMES = ("start", "limit", "delta")


def count(s, lim, d) -> int | str:
    """The element count for numpy scalars of one numeric dtype, or a string saying why none."""
    if d == 0:
        return "delta is 0"
    if s.dtype.kind in "iu":
        return max(-(-(int(lim) - int(s)) // int(d)), 0)
    q = (float(lim) - float(s)) / float(d)
    if not math.isfinite(q):
        return f"start {s}, limit {lim} and delta {d} give {q} elements"
    return max(math.ceil(q), 0)


@register
class Range(Op):
    INPUTS = (3, 3)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        vals = [need_val(self, ins, i, name) for i, name in enumerate(_NAMES)]
        for v, name in zip(vals, _NAMES):
            check_kind(self, v, NUM, name)
            if v.shape is not None and any(d is not None and d != 1 for d in v.shape):
                raise self.bad(f"{name} must be a scalar, got shape {fmt(v.shape)}")
        dt = common_dtype(self, *vals)
        scalars = [None if v.value is None else np.asarray(v.value) for v in vals]
        if all(a is not None and a.size == 1 and a.dtype.kind in NUM for a in scalars) \
                and len({a.dtype for a in scalars}) == 1:
            n = count(*(a.reshape(()) for a in scalars))
            if isinstance(n, str):
                raise self.bad(n)
            return [Val(dt, check_dims(self, [n]))]
        return [Val(dt, (None,))]

    def run(self, start, limit, delta):
        args = [need(self, v, name) for v, name in zip((start, limit, delta), _NAMES)]
        for name, v in zip(_NAMES, args):
            if v.size != 1:
                raise fail(self, f"{name} must be a scalar, got shape {v.shape}")
            need_kind(self, v, NUM, name)
        same_dtype(self, *args)
        dt = args[0].dtype
        s, lim, d = (a.reshape(()) for a in args)
        n = count(s, lim, d)
        if isinstance(n, str):
            raise fail(self, n)
        check_alloc(self, [n], dt)
        return ((s + np.arange(n, dtype=dt) * d).astype(dt, copy=False),)
