"""Softmax: exp(x - max) / sum(exp(x - max)) along `axis`.

Opset 13+ (the default here): softmax over the single dimension `axis` (default -1).
Opset 1-12 coerced the input to 2-D [prod(shape[:axis]), prod(shape[axis:])] (default axis 1) and
normalised over the second dimension.  The IR does not carry the opset, so a node converted from
an older opset must say so with the attribute `opset` (an int < 13); without it opset-13 rules
apply.  Both rules agree whenever `axis` is the last axis."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need, need_float, norm_axis
from edgert.ops.base import Op, register


@register
class Softmax(Op):
    def __init__(self, node):
        super().__init__(node)
        self.legacy = int(self.attr("opset", 13)) < 13
        self.axis = int(self.attr("axis", 1 if self.legacy else -1))

    def run(self, x):
        x = need(self, x, "input")
        need_float(self, x)
        if x.ndim == 0:
            return (np.ones_like(x),)
        axis = norm_axis(self, self.axis, x.ndim)
        if self.legacy:
            flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
            return (self._softmax(flat, 1).reshape(x.shape),)
        return (self._softmax(x, axis),)

    @staticmethod
    def _softmax(x, axis):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)
