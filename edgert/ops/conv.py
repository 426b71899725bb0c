"""Conv (float): im2col + BLAS per group; depthwise (group == C) takes the multiply-add fast path."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgert.kernels.im2col import conv_pads, depthwise_conv, im2col
from edgert.ops._geometry import (CONV_ATTRS, checked_run, conv_geom, float_conv_out, itemsize,
                                  none_empty, shape_of, zeros)
from edgert.ops._schema import Attr, Val
from edgert.ops.base import Op, register


def conv_geometry(op: Op, x_shape, w_shape) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, pads, dilations) of a Conv-like op from its attributes and shapes.

    A stride longer than the padded span only ever yields one output: it is shortened to the
    span + 1 (same output) so strided views never see a hostile stride of 2^62.  A dilation on a
    kernel of size 1 moves no tap: it is 1 (same output), for the same reason."""
    nd = len(w_shape) - 2
    kernel = [int(k) for k in (op.attr("kernel_shape") or w_shape[2:])]
    strides = [int(s) for s in (op.attr("strides") or [1] * nd)]
    dilations = [int(d) if k > 1 else 1
                 for d, k in zip(op.attr("dilations") or [1] * nd, kernel)]
    pads = conv_pads(list(x_shape[2:]), kernel, strides, dilations,
                     op.attr("auto_pad", "NOTSET"), op.attr("pads"))
    for i in range(nd):
        span = x_shape[2 + i] + pads[i] + pads[nd + i] - ((kernel[i] - 1) * dilations[i] + 1)
        strides[i] = min(strides[i], max(span, 0) + 1)
    return kernel, strides, pads, dilations


def conv_float(x: np.ndarray, w: np.ndarray, group: int, kernel, strides, pads, dilations,
               w_rows: np.ndarray | None = None) -> np.ndarray:
    """Float conv without bias; `w_rows` optionally caches W as (g, Cg·∏k, Og) float32."""
    n, c = x.shape[:2]
    o = w.shape[0]
    if group == c and w.shape[1] == 1 and group > 1:
        return depthwise_conv(x, w, strides, pads, dilations, 0, x.dtype)
    cols, out_sp = im2col(x, kernel, strides, pads, dilations, 0, group)   # (N, g, P, K)
    if w_rows is None:
        w_rows = weight_rows(w, group)
    y = np.matmul(cols, w_rows)                                           # (N, g, P, Og)
    return y.transpose(0, 1, 3, 2).reshape((n, o) + tuple(out_sp))


def weight_rows(w: np.ndarray, group: int) -> np.ndarray:
    o = w.shape[0]
    return np.ascontiguousarray(w.reshape(group, o // group, -1).transpose(0, 2, 1))


@register
class Conv(Op):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = CONV_ATTRS
    INPUTS = (2, 3)

    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        self._w_src = None
        self._w_rows = None

    def infer(self, ins: list[Val | None]) -> list[Val]:
        return float_conv_out(self, ins, lambda x, w: conv_geom(self, x, w).out)

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        geom = conv_geom(self, ins[0], ins[1])
        if not none_empty(geom.out, shape_of(ins[0]), shape_of(ins[1])):
            return 0
        item = itemsize(outs[0].dtype, 4)
        m = geom.out[1] if geom.out else None
        # depthwise: the padded copy, repeated to M channels for a channel multiplier
        dw = geom.padded_elements(m, always=None not in (m, geom.channels) and m != geom.channels)
        gemm = geom.cols_elements() + geom.padded_elements(geom.channels)
        if geom.depthwise:
            return dw * item
        return (min(dw, gemm) if geom.maybe_depthwise else gemm) * item

    def _rows(self, w: np.ndarray) -> np.ndarray:
        # weights are constant initializers: lay them out once per op instance
        if w is not self._w_src:
            self._w_rows = weight_rows(w, self.group).astype(w.dtype, copy=False)
            self._w_src = w
        return self._w_rows

    def run(self, x, w, b=None):
        out = checked_run(self, [x, w, b])[0].shape
        if x.size == 0 or w.size == 0 or math.prod(out) == 0:
            y = zeros(self, out, x.dtype)          # no products: the bias alone (or nothing)
        else:
            kernel, strides, pads, dilations = conv_geometry(self, x.shape, w.shape)
            dw = self.group == x.shape[1] and w.shape[1] == 1 and self.group > 1
            y = conv_float(x, w, self.group, kernel, strides, pads, dilations,
                           None if dw else self._rows(w))
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return (y.astype(x.dtype, copy=False),)
