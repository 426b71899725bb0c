"""ConstantOfShape: a tensor of the given shape (1-D int64 input) filled with `value`.

`value` (ONNX: a one-element tensor attribute) is float32 0 when absent; in the IR it is a plain
number with its numpy dtype name in `value_dtype` (what converters/onnx_import.py writes; without
it float -> float32, int -> int64), a one-element list, or {"dtype": name, "data": [x]}."""
from __future__ import annotations

import numpy as np

from edgert import format as F
from edgert.ops._elementwise import INT, MAX_RANK, check_alloc, check_kind, need_val
from edgert.ops._schema import Attr, Val, check_dims, fmt, ints_of
from edgert.ops._util import fail, int_list, need
from edgert.ops.base import Op, register
from edgert.ops.constant import literal


@register
class ConstantOfShape(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS = {"value": Attr("json"),
             "value_dtype": Attr("str", choices=tuple(F.DTYPES))}   # edgert: value's dtype

    def __init__(self, node):
        super().__init__(node)
        v = self.attr("value")
        dt = self.attr("value_dtype")
        if v is None:
            if dt is not None:
                raise self.bad("value_dtype is given without a value")
            self.value = np.zeros((), np.float32)
        elif dt is not None:
            self.value = literal(self, {"dtype": dt, "data": v})
        else:
            self.value = literal(self, v)
        if self.value.size != 1:
            raise self.bad(f"value must have exactly one element, got {self.value.size}")
        self.value = self.value.reshape(())

    def infer(self, ins: list[Val | None]) -> list[Val]:
        s = need_val(self, ins, 0, "input")
        check_kind(self, s, INT, "input")
        if s.rank is not None and s.rank > 1:
            raise self.bad(f"input (the shape) must be 1-D, got shape {fmt(s.shape)}")
        dims = ints_of(s)
        if dims is not None:
            rank = len(dims)
        else:                                     # a scalar shape input reads as one dim
            rank = None if s.shape is None else s.shape[0] if s.shape else 1
        if rank is not None and rank > MAX_RANK:
            raise self.bad(f"output rank {rank} is over {MAX_RANK}")
        dt = self.value.dtype.name
        if dims is not None:
            if any(d < 0 for d in dims):
                raise self.bad(f"shape {dims} has a negative dimension")
            return [Val(dt, check_dims(self, dims))]
        return [Val(dt, None if rank is None else (None,) * rank)]

    def run(self, shape):
        dims = int_list(self, need(self, shape, "input"), "shape")
        if any(d < 0 for d in dims):
            raise fail(self, f"shape {dims} has a negative dimension")
        check_alloc(self, dims, self.value.dtype)
        return (np.full(dims, self.value, dtype=self.value.dtype),)
