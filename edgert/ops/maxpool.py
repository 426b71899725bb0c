"""MaxPool: max over each window (kernel_shape, strides, pads, auto_pad, ceil_mode, dilations).

The optional second output Indices holds, per output, the flat index of the max in the whole
input tensor (N and C included), row-major (storage_order 0) or, for 2-D pooling, column-major
over (H, W) (storage_order 1).  Ties keep the first window position in row-major order."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgert.ops._geometry import FLOAT_TYPES, INT_TYPES, checked_run, need_dtype, zeros
from edgert.ops._pool import POOL_ATTRS, pool_infer, pool_scratch, windows
from edgert.ops._schema import Attr, Val
from edgert.ops._util import fail, prod
from edgert.ops.base import Op, register


@register
class MaxPool(Op):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {**POOL_ATTRS, "storage_order": Attr("int", choices=(0, 1))}
    OUTPUTS = (1, 2)                   # Y, optional Indices

    def _want_idx(self) -> bool:
        return len(self.node.outputs) > 1 and bool(self.node.outputs[1])

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dt = need_dtype(self, x, FLOAT_TYPES | INT_TYPES, "X")
        geom = pool_infer(self, x)
        nd = None if geom.out is None else len(geom.out) - 2
        if self._want_idx() and int(self.attr("storage_order", 0)) == 1 and nd not in (None, 2):
            raise self.bad("storage_order=1 is defined for 2-D pooling only")
        outs = [Val(dt, geom.out)]
        if len(self.node.outputs) > 1:
            outs.append(Val("int64", geom.out))
        return outs

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        return pool_scratch(pool_infer(self, ins[0]), outs[0].dtype)

    def run(self, x):
        outs = checked_run(self, [x])
        if math.prod(outs[0].shape) == 0:                   # nothing to pool: empty outputs
            return tuple(zeros(self, v.shape, v.dtype) for v in outs)
        x, w = windows(self, x)
        spatial = list(x.shape[2:])
        if np.issubdtype(x.dtype, np.floating):
            low = -np.inf
        elif np.issubdtype(x.dtype, np.integer):
            low = np.iinfo(x.dtype).min
        else:
            raise fail(self, f"unsupported dtype {x.dtype}")
        width = [(0, 0), (0, 0)] + list(zip(w.pb, w.ext))
        xp = np.pad(x, width, constant_values=low)
        want_idx = len(self.node.outputs) > 1 and bool(self.node.outputs[1])
        order = int(self.attr("storage_order", 0))
        if want_idx and order == 1 and len(spatial) != 2:
            raise fail(self, "storage_order=1 is defined for 2-D pooling only")
        # flat-index weights of the spatial coordinates
        if order == 1:
            weights = [1, spatial[0]]
        else:
            weights = [prod(spatial[i + 1:]) for i in range(len(spatial))]
        best = idx = None
        for ks, sl in w.taps():
            v = xp[sl]
            if want_idx:
                flat = np.zeros(tuple(w.out), dtype=np.int64)
                for i, (k, o, s, d, b, wt) in enumerate(
                        zip(ks, w.out, w.strides, w.dilations, w.pb, weights)):
                    coord = np.arange(o, dtype=np.int64) * s + k * d - b
                    shape = [1] * len(w.out)
                    shape[i] = o
                    flat = flat + (coord * wt).reshape(shape)
            if best is None:
                best = v.copy()
                if want_idx:
                    idx = np.broadcast_to(flat, v.shape).copy()
            else:
                better = v > best
                best = np.where(better, v, best)
                if want_idx:
                    idx = np.where(better, flat, idx)
        if not want_idx:
            return (best,)
        nc = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2])
        base = (nc * prod(spatial)).reshape(x.shape[:2] + (1,) * len(spatial))
        return (best, idx + base)
