"""QuantizeLinear: y = saturate(round_half_even(x / y_scale) + y_zero_point), per-tensor, per-axis or
blocked (opset 21 `block_size`).  edgert attrs `qmin`/`qmax` narrow the saturation range (abits < 8).

Without a zero point the output type is `output_dtype` (opset 21), else uint8."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.errors import InputError
from edgert.ops._geometry import (FLOAT_TYPES, QRANGE_ATTRS, check_qrange, check_scale,
                                  check_zero_point, checked_run, need_dtype, prod_lb, qparam_layout,
                                  shape_of)
from edgert.ops._schema import Attr, Val
from edgert.ops.base import Op, register

Q_TYPES = frozenset({"int8", "uint8", "int16", "uint16"})
# ONNX TensorProto.DataType -> numpy name, for output_dtype (0: from the zero point, else uint8)
OUTPUT_DTYPES = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}


def broadcast_param(p: np.ndarray | None, x_shape: tuple, axis: int, block_size: int = 0):
    """Shape a scale / zero-point for broadcasting against x: one element (per-tensor, as ONNX's
    reference, whatever block_size says), 1-D along `axis`, or blocked (same rank as x,
    `ceil(x.shape[axis] / block_size)` along axis -> repeated block_size times)."""
    if p is None:
        return None
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    if not x_shape:
        raise InputError(f"per-axis parameter of shape {p.shape} for a scalar x")
    axis = axis % len(x_shape)
    if block_size:
        if p.ndim != len(x_shape):
            raise InputError(f"blocked scale of shape {p.shape} must have the rank of x {x_shape}")
        # one block covers x when block_size >= its dim: never repeat past x (block_size 2^62)
        p = np.repeat(p, min(block_size, x_shape[axis]), axis=axis)
        return p[tuple(slice(0, x_shape[axis]) if i == axis else slice(None)
                       for i in range(p.ndim))]
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise InputError(f"per-axis parameter of shape {p.shape} does not match x {x_shape} "
                         f"on axis {axis}")
    return p.reshape((-1,) + (1,) * (len(x_shape) - 1 - axis))


def check_qparams(op, x: Val | None, scale: Val | None, zp: Val | None, names: tuple[str, str],
                  float32: bool) -> None:
    """Scale values and the per-tensor / per-axis / blocked layout of both parameters."""
    axis, block = int(op.attr("axis", 1)), int(op.attr("block_size", 0))
    check_scale(op, scale, names[0], float32=float32)
    xs = shape_of(x)
    qparam_layout(op, xs, scale, names[0], axis, block)
    qparam_layout(op, xs, zp, names[1], axis, block)


@register
class QuantizeLinear(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {
        "axis": Attr("int"),
        "block_size": Attr("int", lo=0),
        "output_dtype": Attr("int", choices=(0, *OUTPUT_DTYPES)),
        "saturate": Attr("int", choices=(0, 1)),     # float8 outputs only: ints always saturate
        **QRANGE_ATTRS,
    }
    INPUTS = (2, 3)

    def __init__(self, node):
        super().__init__(node)
        self.axis = int(self.attr("axis", 1))
        self.block_size = int(self.attr("block_size", 0))
        self.output_dtype = OUTPUT_DTYPES.get(int(self.attr("output_dtype", 0)))

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, s = ins[0], ins[1]
        zp = ins[2] if len(ins) > 2 else None
        need_dtype(self, x, FLOAT_TYPES | {"int32"}, "x")
        check_qparams(self, x, s, zp, ("y_scale", "y_zero_point"), float32=True)
        if zp is None:
            dt = self.output_dtype or "uint8"
        else:
            dt = check_zero_point(self, zp, "y_zero_point", Q_TYPES)
            if dt is not None and self.output_dtype is not None and dt != self.output_dtype:
                raise self.bad(f"output_dtype {self.output_dtype} does not match y_zero_point's "
                               f"dtype {dt}")
            dt = dt or self.output_dtype
        check_qrange(self, dt)
        xs = shape_of(x)
        return [Val(dt, xs)]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        return 4 * prod_lb(shape_of(ins[0]) or ())          # x / scale in float32

    def run(self, x, y_scale, y_zero_point=None):
        dtype = np.dtype(checked_run(self, [x, y_scale, y_zero_point], (1, 2))[0].dtype)
        info = np.iinfo(dtype)
        qmin = max(int(self.attr("qmin", info.min)), int(info.min))
        qmax = min(int(self.attr("qmax", info.max)), int(info.max))
        scale = broadcast_param(y_scale, x.shape, self.axis, self.block_size).astype(np.float32)
        zp = broadcast_param(y_zero_point, x.shape, self.axis, self.block_size)
        # float32 division then round-half-even, as ORT/MLAS do
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.rint(x.astype(np.float32, copy=False) / scale)
            if zp is not None:
                q = q + zp.astype(np.float32)
            return (np.clip(q, qmin, qmax).astype(dtype),)
