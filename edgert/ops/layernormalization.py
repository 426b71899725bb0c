"""LayerNormalization (opset 17): normalise over axes [axis, rank) (axis default -1), then
* Scale + B (broadcast).  Outputs Y and, when asked for, Mean and InvStdDev (reduced axes kept
as 1).  Statistics are computed in float32 (stash_type 1, the only value ONNX defines)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import broadcast_shape, fail, need, need_float, norm_axis
from edgert.ops.base import Op, register


@register
class LayerNormalization(Op):
    def run(self, x, scale, b=None):
        x, scale = need(self, x, "X"), need(self, scale, "Scale")
        need_float(self, x)
        if x.ndim == 0:
            raise fail(self, "X must have rank >= 1")
        axis = norm_axis(self, self.attr("axis", -1), x.ndim)
        if int(self.attr("stash_type", 1)) != 1:
            raise fail(self, f"stash_type {self.attr('stash_type')} is not defined by ONNX")
        eps = float(self.attr("epsilon", 1e-5))
        norm_shape = x.shape[axis:]
        broadcast_shape(self, norm_shape, scale.shape)
        if b is not None:
            broadcast_shape(self, norm_shape, b.shape)
        red = tuple(range(axis, x.ndim))
        xf = x.astype(np.float32, copy=False)
        mean = np.mean(xf, axis=red, keepdims=True, dtype=np.float32)
        d = xf - mean
        var = np.mean(d * d, axis=red, keepdims=True, dtype=np.float32)
        inv = np.float32(1) / np.sqrt(var + np.float32(eps))
        y = (d * inv).astype(x.dtype) * scale.astype(x.dtype, copy=False)
        if b is not None:
            y = y + b.astype(x.dtype, copy=False)
        if np.broadcast_shapes(y.shape, x.shape) != x.shape or y.shape != x.shape:
            raise fail(self, f"Scale {scale.shape} / B broadcast X {x.shape} to {y.shape}")
        return (y, mean, inv)
