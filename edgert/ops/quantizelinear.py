"""QuantizeLinear: y = saturate(round_half_even(x / y_scale) + y_zero_point), per-tensor, per-axis or
blocked (opset 21 `block_size`).  edgert attrs `qmin`/`qmax` narrow the saturation range (abits < 8)."""
from __future__ import annotations

import numpy as np

from edgert.ops.base import Op, register


def broadcast_param(p: np.ndarray | None, x_shape: tuple, axis: int, block_size: int = 0):
    """Shape a scale / zero-point for broadcasting against x: scalar, 1-D along `axis`, or blocked
    (same rank as x, `x.shape[axis] / block_size` along axis -> repeated block_size times)."""
    if p is None:
        return None
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1 and block_size == 0:
        return p.reshape(())
    axis = axis % len(x_shape)
    if block_size:
        if p.ndim != len(x_shape):
            raise ValueError(f"blocked scale of shape {p.shape} must have the rank of x {x_shape}")
        p = np.repeat(p, block_size, axis=axis)
        return p[tuple(slice(0, x_shape[axis]) if i == axis else slice(None)
                       for i in range(p.ndim))]
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise ValueError(f"per-axis parameter of shape {p.shape} does not match x {x_shape} "
                         f"on axis {axis}")
    return p.reshape((-1,) + (1,) * (len(x_shape) - 1 - axis))


@register
class QuantizeLinear(Op):
    def __init__(self, node):
        super().__init__(node)
        self.axis = int(self.attr("axis", 1))
        self.block_size = int(self.attr("block_size", 0))

    def run(self, x, y_scale, y_zero_point=None):
        dtype = np.dtype(y_zero_point.dtype) if y_zero_point is not None else np.dtype(np.uint8)
        info = np.iinfo(dtype)
        qmin = int(self.attr("qmin", info.min))
        qmax = int(self.attr("qmax", info.max))
        scale = broadcast_param(y_scale, x.shape, self.axis, self.block_size).astype(np.float32)
        zp = broadcast_param(y_zero_point, x.shape, self.axis, self.block_size)
        # float32 division then round-half-even, as ORT/MLAS do
        q = np.rint(x.astype(np.float32, copy=False) / scale)
        if zp is not None:
            q = q + zp.astype(np.float32)
        return (np.clip(q, qmin, qmax).astype(dtype),)
