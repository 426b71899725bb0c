"""Conv (float): im2col + BLAS per group; depthwise (group == C) takes the multiply-add fast path."""
from __future__ import annotations

import numpy as np

from edgert.kernels.im2col import conv_pads, depthwise_conv, im2col
from edgert.ops.base import Op, register


def conv_geometry(op: Op, x_shape, w_shape) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, pads, dilations) of a Conv-like op from its attributes and shapes."""
    nd = len(w_shape) - 2
    kernel = [int(k) for k in (op.attr("kernel_shape") or w_shape[2:])]
    strides = [int(s) for s in (op.attr("strides") or [1] * nd)]
    dilations = [int(d) for d in (op.attr("dilations") or [1] * nd)]
    pads = conv_pads(list(x_shape[2:]), kernel, strides, dilations,
                     op.attr("auto_pad", "NOTSET"), op.attr("pads"))
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
    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        self._w_src = None
        self._w_rows = None

    def _rows(self, w: np.ndarray) -> np.ndarray:
        # weights are constant initializers: lay them out once per op instance
        if w is not self._w_src:
            self._w_rows = weight_rows(w, self.group).astype(w.dtype, copy=False)
            self._w_src = w
        return self._w_rows

    def run(self, x, w, b=None):
        kernel, strides, pads, dilations = conv_geometry(self, x.shape, w.shape)
        if x.shape[1] != w.shape[1] * self.group:
            raise ValueError(f"Conv {self.node.name!r}: input has {x.shape[1]} channels, weight "
                             f"expects {w.shape[1]}×group {self.group}")
        dw = self.group == x.shape[1] and w.shape[1] == 1 and self.group > 1
        y = conv_float(x, w, self.group, kernel, strides, pads, dilations,
                       None if dw else self._rows(w))
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return (y.astype(x.dtype, copy=False),)
