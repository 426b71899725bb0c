"""Shape: the input's shape as int64, sliced by the opset-15 `start` / `end` attributes."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import need
from edgert.ops.base import Op, register


@register
class Shape(Op):
    def run(self, x):
        x = need(self, x, "data")
        r = x.ndim
        start, end = int(self.attr("start", 0)), self.attr("end")
        end = r if end is None else int(end)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        return (np.array(x.shape[start:end], dtype=np.int64),)
