"""BatchNormalization, inference mode: y = (x - mean) / sqrt(var + epsilon) * scale + B over
channel axis 1.  training_mode=1 (opset 14+) and spatial=0 (opset 7-8 per-activation statistics)
raise UnsupportedOp.  Old opsets list up to five outputs; only Y is computed, so the others must
be left unnamed ("")."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, check_kind, need_val
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._util import fail, need, need_float, rank_at_least, unsupported
from edgert.ops.base import Op, register

_PARAMS = ("scale", "B", "input_mean", "input_var")


@register
class BatchNormalization(Op):
    ATTRS = {"epsilon": Attr("float", lo=0.0),
             "momentum": Attr("float"),                      # training only
             "training_mode": Attr("int", choices=(0, 1)),   # opset 14+
             "spatial": Attr("int", choices=(0, 1))}         # opset 1-8
    IGNORED_ATTRS = frozenset({"consumed_inputs", "is_test"})   # opset 1-6
    INPUTS = (5, 5)
    OUTPUTS = (1, 5)

    def __init__(self, node):
        super().__init__(node)
        if int(self.attr("training_mode", 0)):
            raise unsupported(self, "training_mode=1 is not supported (inference only)")
        if not int(self.attr("spatial", 1)):
            raise unsupported(self, "spatial=0 (per-activation statistics) is not supported")
        self.eps = float(self.attr("epsilon", 1e-5))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "X")
        check_kind(self, x, FLOAT, "X")
        if any(self.node.outputs[1:]):
            raise self.bad("only output Y exists in inference mode (running statistics are "
                           "training outputs)")
        c = None
        if x.shape is not None:
            if len(x.shape) < 2:
                raise self.bad(f"X must have rank >= 2, got shape {fmt(x.shape)}")
            c = x.shape[1]
        for i, name in enumerate(_PARAMS, 1):
            p = need_val(self, ins, i, name)
            if p.shape is None:
                continue
            if len(p.shape) != 1 or (c is not None and p.shape[0] is not None and p.shape[0] != c):
                raise self.bad(f"{name} must have shape [{'?' if c is None else c}], "
                               f"got {fmt(p.shape)}")
            c = p.shape[0] if c is None else c
        shape = x.shape
        if shape is not None and shape[1] is None and c is not None:
            shape = (shape[0], c) + tuple(shape[2:])
        return [Val(x.dtype, shape)] + [Val(None, None)] * (len(self.node.outputs) - 1)

    def run(self, x, scale, b, mean, var):
        x = need(self, x, "X")
        need_float(self, x)
        rank_at_least(self, x, 2)
        c = x.shape[1]
        params = []
        for name, v in zip(_PARAMS, (scale, b, mean, var)):
            v = need(self, v, name)
            if v.shape != (c,):
                raise fail(self, f"{name} must have shape ({c},), got {v.shape}")
            params.append(v.astype(np.float64))
        s, bias, m, v = params
        # fold into one multiply-add per channel (computed in float64, applied in x's dtype)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            a = s / np.sqrt(v + self.eps)
            shift = bias - m * a
        bshape = (1, c) + (1,) * (x.ndim - 2)
        return (x * a.astype(x.dtype).reshape(bshape) + shift.astype(x.dtype).reshape(bshape),)
