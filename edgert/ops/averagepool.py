"""AveragePool: mean over each window (kernel_shape, strides, pads, auto_pad, ceil_mode,
dilations (opset 19)).  count_include_pad=1 divides by the window's overlap with input + explicit
pads; 0 (default) by its overlap with the input.  A ceil_mode overhang never counts."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgert.ops._geometry import FLOAT_TYPES, checked_run, need_dtype, zeros
from edgert.ops._pool import POOL_ATTRS, pool_infer, pool_scratch, windows
from edgert.ops._schema import Attr, Val
from edgert.ops._util import need_float
from edgert.ops.base import Op, register


@register
class AveragePool(Op):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {**POOL_ATTRS,
                                        "count_include_pad": Attr("int", choices=(0, 1))}

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dt = need_dtype(self, x, FLOAT_TYPES, "X")
        return [Val(dt, pool_infer(self, x).out)]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        return pool_scratch(pool_infer(self, ins[0]), outs[0].dtype)

    def run(self, x):
        out = checked_run(self, [x])[0].shape
        if math.prod(out) == 0:                             # nothing to pool: an empty output
            return (zeros(self, out, x.dtype),)
        x, w = windows(self, x)
        need_float(self, x)
        spatial = x.shape[2:]
        width = [(0, 0), (0, 0)] + list(zip(w.pb, w.ext))
        xp = np.pad(x, width)
        # 1 where a position counts toward the divisor, per spatial axis, then their outer product
        include_pad = bool(self.attr("count_include_pad", 0))
        mask = np.ones((), dtype=x.dtype)
        for i, (d, b, e, ext) in enumerate(zip(spatial, w.pb, w.pe, w.ext)):
            m = np.zeros(b + d + ext, dtype=x.dtype)
            if include_pad:
                m[:b + d + e] = 1
            else:
                m[b:b + d] = 1
            mask = np.multiply.outer(mask, m)
        total = np.zeros(x.shape[:2] + tuple(w.out), dtype=x.dtype)
        count = np.zeros(tuple(w.out), dtype=x.dtype)
        for _, sl in w.taps():
            total += xp[sl]
            count += mask[sl[1:]]
        with np.errstate(invalid="ignore", divide="ignore"):    # a window wholly in the pads
            return (total / count,)
