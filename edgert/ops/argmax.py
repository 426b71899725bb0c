"""ArgMax: int64 index of the maximum along `axis` (default 0), keepdims (default 1),
first occurrence unless select_last_index=1."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import NUM, check_kind, need_kind, need_val
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops._schema import norm_axis as static_axis
from edgert.ops._util import fail, need, norm_axis
from edgert.ops.base import Op, register


@register
class ArgMax(Op):
    ATTRS = {"axis": Attr("int"), "keepdims": Attr("int", choices=(0, 1)),
             "select_last_index": Attr("int", choices=(0, 1))}    # opset 12+

    def __init__(self, node):
        super().__init__(node)
        self.axis = int(self.attr("axis", 0))
        self.keep = bool(self.attr("keepdims", 1))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "data")
        check_kind(self, x, NUM + "b", "data")
        if x.shape is None:
            return [Val("int64", None)]
        if not x.shape:
            raise self.bad("data must have rank >= 1")
        axis = static_axis(self, self.axis, len(x.shape))
        if x.shape[axis] == 0:
            raise self.bad(f"axis {self.axis} of data {fmt(x.shape)} is empty: no maximum")
        out = list(x.shape)
        if self.keep:
            out[axis] = 1
        else:
            del out[axis]
        return [Val("int64", tuple(out))]

    def run(self, x):
        x = need(self, x, "data")
        need_kind(self, x, NUM + "b", "data")
        if x.ndim == 0:
            raise fail(self, "data must have rank >= 1")
        axis = norm_axis(self, self.axis, x.ndim)
        n = x.shape[axis]
        if n == 0:
            raise fail(self, f"axis {self.axis} of data {x.shape} is empty: no maximum")
        if int(self.attr("select_last_index", 0)):
            idx = n - 1 - np.argmax(np.flip(x, axis=axis), axis=axis, keepdims=self.keep)
        else:
            idx = np.argmax(x, axis=axis, keepdims=self.keep)
        return (idx.astype(np.int64),)
