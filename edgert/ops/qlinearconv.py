"""QLinearConv: exact integer conv (im2col padded with x_zp + `int_matmul`, or the depthwise
multiply-add path), int32 bias, TFLite fixed-point requantization per output channel.

acc[c] = Σ x·(w − w_zp) − x_zp·Σ(w − w_zp)[c] + B[c] = Σ (x − x_zp)·(w − w_zp) + B[c], because
padding holds x_zp (real zero).  Weight layouts, Σw and the multipliers are cached per op instance.
The zero points may be omitted ("" = 0; an omitted y_zero_point means uint8 output)."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgert.kernels.im2col import depthwise_conv, im2col
from edgert.kernels.intgemm import PackedB, int_matmul
from edgert.kernels.requant import requant_multipliers, requantize
from edgert.ops._geometry import (CONV_ATTRS, Q8_TYPES, QRANGE_ATTRS, check_bias,
                                  check_multipliers, check_per_channel, check_qrange, check_scalar,
                                  check_scale, check_zero_point, checked_run, conv_geom, need_dtype,
                                  none_empty, shape_of, zeros)
from edgert.ops._schema import Attr, Val
from edgert.ops.base import Op, register
from edgert.ops.conv import conv_geometry
from edgert.ops.qlinearmatmul import _as_int, _key, effective_weight, out_range

_PARAMS = (1, 2, 4, 5, 6, 7)          # scales and zero points: their values are checked at run


@register
class QLinearConv(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {**CONV_ATTRS, **QRANGE_ATTRS}
    INPUTS = (8, 9)
    OPTIONAL_INPUTS = frozenset({2, 5, 7})

    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        self._w_src = None
        self._w_key = None
        self._mkey = None

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, xs, xz, w, ws, wz, ys, yz = (list(ins) + [None] * 8)[:8]
        b = ins[8] if len(ins) > 8 else None
        need_dtype(self, x, Q8_TYPES, "x")
        need_dtype(self, w, Q8_TYPES, "w")
        check_zero_point(self, xz, "x_zero_point", Q8_TYPES, ("x", x))
        check_zero_point(self, wz, "w_zero_point", Q8_TYPES, ("w", w))
        ydt = check_zero_point(self, yz, "y_zero_point", Q8_TYPES) if yz is not None else "uint8"
        need_dtype(self, b, ("int32",), "B")
        geom = conv_geom(self, x, w)
        m = None if geom.out is None else geom.out[1]
        for what, v in (("x_scale", xs), ("w_scale", ws), ("y_scale", ys)):
            check_scale(self, v, what)
        check_scalar(self, xs, "x_scale")
        check_scalar(self, ys, "y_scale")
        check_scalar(self, xz, "x_zero_point")
        check_scalar(self, yz, "y_zero_point")
        check_per_channel(self, ws, "w_scale", m, "one per output channel")
        check_per_channel(self, wz, "w_zero_point", m, "one per output channel")
        check_bias(self, b, m)
        check_multipliers(self, xs, ws, ys)
        check_qrange(self, ydt)
        return [Val(ydt, geom.out)]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        geom = conv_geom(self, ins[0], ins[3])
        if geom.out is None or not none_empty(geom.out, shape_of(ins[0]), shape_of(ins[3])):
            return 0
        acc = 8 * geom.out_elements()                   # the int64 accumulator
        dw = 4 * geom.padded_elements(geom.out[1], always=True)    # int32 x, padded, repeated
        cols = geom.cols_elements()                     # uint8/int8 im2col rows + one group in f32
        gemm = cols + 4 * (cols // max(geom.group, 1))
        if geom.depthwise:
            return acc + dw
        return acc + (min(dw, gemm) if geom.maybe_depthwise else gemm)

    def _prepare_w(self, w, w_zp, depthwise: bool):
        zkey = _key(w_zp)
        if w is self._w_src and zkey == self._w_key:
            return
        weff = effective_weight(w, w_zp, axis=0)
        o, g = w.shape[0], self.group
        self._weff = weff
        if not depthwise:
            rows = weff.reshape(g, o // g, -1)                       # (g, Og, Cg·∏k)
            self._packed = [PackedB(np.ascontiguousarray(rows[i].T)) for i in range(g)]
            self._wsum = rows.sum(axis=2, dtype=np.int64)            # (g, Og)
        self._w_src, self._w_key = w, zkey

    def run(self, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None):
        out = checked_run(self, [x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b],
                          _PARAMS)[0].shape
        dtype, qmin, qmax = out_range(self, y_zp)
        n, c = x.shape[:2]
        g = self.group
        mkey = _key(x_scale, w_scale, y_scale)
        if mkey != self._mkey:
            self._m0, self._shift = requant_multipliers(x_scale, w_scale, y_scale)
            self._mkey = mkey
        if math.prod(out) == 0:
            return (zeros(self, out, dtype),)
        if x.size == 0 or w.size == 0:                  # no products: the bias alone
            acc = zeros(self, out, np.int64)
        else:
            kernel, strides, pads, dilations = conv_geometry(self, x.shape, w.shape)
            xzp = _as_int(x_zp)
            depthwise = g == c and w.shape[1] == 1 and g > 1
            self._prepare_w(w, w_zp, depthwise)
            if depthwise:
                kk = int(np.prod(kernel))
                acc_dt = np.int32 if 255 * 255 * kk < (1 << 31) else np.int64
                xs = x.astype(np.int32) - xzp
                acc = depthwise_conv(xs, self._weff, strides, pads, dilations, 0, acc_dt)
                acc = acc.astype(np.int64)
            else:
                cols, out_sp = im2col(x, kernel, strides, pads, dilations, xzp, g)  # (N, g, P, K)
                parts = []
                for i in range(g):                      # loop over groups only
                    a = int_matmul(cols[:, i], self._packed[i]).astype(np.int64)   # (N, P, Og)
                    if xzp:
                        a -= xzp * self._wsum[i]
                    parts.append(a)
                acc = np.concatenate(parts, axis=2) if g > 1 else parts[0]
                acc = acc.transpose(0, 2, 1).reshape((n, w.shape[0]) + tuple(out_sp))
        if b is not None:
            acc = acc + b.astype(np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
        m0 = self._m0 if self._m0.size != 1 else self._m0.reshape(())
        sh = self._shift if self._shift.size != 1 else self._shift.reshape(())
        return (requantize(acc, m0, sh, _as_int(y_zp), qmin, qmax, axis=1, dtype=dtype),)
