"""ConstantOfShape: a tensor of the given shape (1-D int64 input) filled with `value`.

`value` (ONNX: a one-element tensor attribute) is float32 0 when absent; in the IR it is a plain
number with its numpy dtype name in `value_dtype` (what converters/onnx_import.py writes; without
it float -> float32, int -> int64), a one-element list, or {"dtype": name, "data": [x]}."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, int_list, need
from edgert.ops.base import Op, register
from edgert.ops.constant import literal


@register
class ConstantOfShape(Op):
    def __init__(self, node):
        super().__init__(node)
        v = self.attr("value")
        dt = self.attr("value_dtype")
        if v is None:
            self.value = np.zeros((), np.float32)
        elif dt is not None:
            try:
                self.value = np.array(v, dtype=np.dtype(dt))
            except TypeError:
                raise fail(self, f"unknown value_dtype {dt!r}") from None
        else:
            self.value = literal(self, v)
        if self.value.size != 1:
            raise fail(self, f"value must have exactly one element, got {self.value.size}")
        self.value = self.value.reshape(())

    def run(self, shape):
        dims = int_list(self, need(self, shape, "input"), "shape")
        if any(d < 0 for d in dims):
            raise fail(self, f"shape {dims} has a negative dimension")
        return (np.full(dims, self.value, dtype=self.value.dtype),)
