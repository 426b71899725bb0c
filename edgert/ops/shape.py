"""Shape: the input's shape as int64, sliced by the opset-15 `start` / `end` attributes.
Statically the value is known whenever the sliced dims are."""
from __future__ import annotations

import numpy as np

from edgert.ops._elementwise import need_val
from edgert.ops._schema import INT64_MAX, Attr, Val
from edgert.ops._util import need
from edgert.ops.base import Op, register


@register
class Shape(Op):
    ONNX_VERSION = 25    # versions 23-25 only added float4e2m1 / float8e8m0 / int2 / uint2,
                         # which edgert does not have
    ATTRS = {"start": Attr("int"), "end": Attr("int")}      # opset 15+

    def _slice(self, r: int) -> slice:
        start, end = int(self.attr("start", 0)), self.attr("end")
        end = r if end is None else int(end)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        return slice(start, end)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = need_val(self, ins, 0, "data")
        if x.shape is None:
            return [Val("int64", (None,))]
        dims = tuple(x.shape)[self._slice(len(x.shape))]
        value = None
        if all(d is not None and 0 <= d <= INT64_MAX for d in dims):
            value = np.array(dims, dtype=np.int64)
        return [Val("int64", (len(dims),), value)]

    def run(self, x):
        x = need(self, x, "data")
        return (np.array(x.shape[self._slice(x.ndim)], dtype=np.int64),)
