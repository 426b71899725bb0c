"""Softmax: exp(x - max) / sum(exp(x - max)) along `axis`.

Opset 13+ (the default here): softmax over the single dimension `axis` (default -1).
Opset 1-12 coerced the input to 2-D [prod(shape[:axis]), prod(shape[axis:])] (default axis 1) and
normalised over the second dimension.  The IR does not carry the opset, so a node converted from
an older opset must say so with the attribute `opset` (an int < 13); without it opset-13 rules
apply.  Both rules agree whenever `axis` is the last axis."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import FLOAT, check_kind, need_val
from edgert.ops._schema import Attr, Val
from edgert.ops._schema import norm_axis as static_axis
from edgert.ops._util import need, need_float, norm_axis, prod
from edgert.ops.base import Op, register


@register
class Softmax(Op):
    ATTRS = {"axis": Attr("int"),
             "opset": Attr("int", lo=1, hi=999)}     # edgert: the source opset, < 13 = 2-D rule

    def __init__(self, node):
        super().__init__(node)
        self.legacy = int(self.attr("opset", 13)) < 13
        self.axis = int(self.attr("axis", 1 if self.legacy else -1))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "input")
        check_kind(self, x, FLOAT, "input")
        if x.rank:
            static_axis(self, self.axis, x.rank)
        return [Val(x.dtype, x.shape)]

    def run(self, x):
        x = need(self, x, "input")
        need_float(self, x)
        if x.ndim == 0:
            return (np.ones_like(x),)
        axis = norm_axis(self, self.axis, x.ndim)
        if x.size == 0:
            return (x.copy(),)
        if self.legacy:
            flat = x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:]))
            return (self._softmax(flat, 1).reshape(x.shape),)
        return (self._softmax(x, axis),)

    @staticmethod
    def _softmax(x, axis):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)
