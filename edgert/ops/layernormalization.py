"""LayerNormalization (opset 17): normalise over axes [axis, rank) (axis default -1), then
* Scale + B (broadcast).  Outputs Y and, when asked for, Mean and InvStdDev (reduced axes kept
as 1).  Statistics are computed in float32 (stash_type 1; other stash types raise UnsupportedOp)."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, check_kind, need_val, opt_val
from edgert.ops._schema import Attr, Val, bcast, fmt
from edgert.ops._schema import norm_axis as static_axis
from edgert.ops._util import broadcast_shape, fail, need, need_float, norm_axis, unsupported
from edgert.ops.base import Op, register


@register
class LayerNormalization(Op):
    ATTRS = {"axis": Attr("int"), "epsilon": Attr("float", lo=0.0),
             "stash_type": Attr("int", lo=1, hi=23)}     # a TensorProto type; only 1 (float)
    INPUTS = (2, 3)
    OUTPUTS = (1, 3)

    def __init__(self, node):
        super().__init__(node)
        if int(self.attr("stash_type", 1)) != 1:
            raise unsupported(self, f"stash_type {self.attr('stash_type')} is not supported "
                                    f"(only 1, float32 statistics)")
        self.axis = int(self.attr("axis", -1))
        self.eps = float(self.attr("epsilon", 1e-5))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, scale = need_val(self, ins, 0, "X"), need_val(self, ins, 1, "Scale")
        b = opt_val(ins, 2)
        check_kind(self, x, FLOAT, "X")
        params = [v.shape for v in (scale, b) if v is not None and v.shape is not None]
        if x.shape is None:
            y, stat = None, None
        else:
            r = len(x.shape)
            if r == 0:
                raise self.bad("X must have rank >= 1")
            axis = static_axis(self, self.axis, r)
            for p in params:
                bcast(self, x.shape[axis:], p)
            y = bcast(self, x.shape, *params)
            if len(y) != r or any(d is not None and d != e for d, e in zip(x.shape, y)):
                raise self.bad(f"Scale / B shapes {', '.join(map(fmt, params))} would broadcast "
                               f"X {fmt(x.shape)} to {fmt(y)}")
            stat = tuple(x.shape[:axis]) + (1,) * (r - axis)
        outs = [Val(x.dtype, y), Val("float32", stat), Val("float32", stat)]
        return outs[:len(self.node.outputs)]

    def scratch(self, ins, outs):
        x = ins[0]
        return 0 if x is None else x.min_elements() * 4   # float32 statistics over X

    def run(self, x, scale, b=None):
        x, scale = need(self, x, "X"), need(self, scale, "Scale")
        need_float(self, x)
        if x.ndim == 0:
            raise fail(self, "X must have rank >= 1")
        axis = norm_axis(self, self.axis, x.ndim)
        norm_shape = x.shape[axis:]
        params = [scale.shape] + ([] if b is None else [b.shape])
        for p in params:
            broadcast_shape(self, norm_shape, p)
        if broadcast_shape(self, x.shape, *params) != x.shape:
            raise fail(self, f"Scale {scale.shape} / B broadcast X {x.shape} past its shape")
        red = tuple(range(axis, x.ndim))
        xf = x.astype(np.float32, copy=False)
        with np.errstate(invalid="ignore", divide="ignore"):     # empty normalised slice: NaN
            mean = np.mean(xf, axis=red, keepdims=True, dtype=np.float32)
            d = xf - mean
            var = np.mean(d * d, axis=red, keepdims=True, dtype=np.float32)
            inv = np.float32(1) / np.sqrt(var + np.float32(self.eps))
        y = (d * inv).astype(x.dtype) * scale.astype(x.dtype, copy=False)
        if b is not None:
            y = y + b.astype(x.dtype, copy=False)
        return (y, mean, inv)
