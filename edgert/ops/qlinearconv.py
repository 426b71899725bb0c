"""QLinearConv: exact integer conv (im2col padded with x_zp + `int_matmul`, or the depthwise
multiply-add path), int32 bias, TFLite fixed-point requantization per output channel.

acc[c] = Σ x·(w − w_zp) − x_zp·Σ(w − w_zp)[c] + B[c] = Σ (x − x_zp)·(w − w_zp) + B[c], because
padding holds x_zp (real zero).  Weight layouts, Σw and the multipliers are cached per op instance."""
from __future__ import annotations

import numpy as np

from edgert.kernels.im2col import depthwise_conv, im2col
from edgert.kernels.intgemm import PackedB, int_matmul
from edgert.kernels.requant import requant_multipliers, requantize
from edgert.ops.base import Op, register
from edgert.ops.conv import conv_geometry
from edgert.ops.qlinearmatmul import _as_int, _key, effective_weight, out_range


@register
class QLinearConv(Op):
    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        self._w_src = None
        self._w_key = None
        self._mkey = None

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
        dtype, qmin, qmax = out_range(self, y_zp)
        kernel, strides, pads, dilations = conv_geometry(self, x.shape, w.shape)
        n, c = x.shape[:2]
        g = self.group
        if c != w.shape[1] * g:
            raise ValueError(f"QLinearConv {self.node.name!r}: input has {c} channels, weight "
                             f"expects {w.shape[1]}×group {g}")
        mkey = _key(x_scale, w_scale, y_scale)
        if mkey != self._mkey:
            self._m0, self._shift = requant_multipliers(x_scale, w_scale, y_scale)
            self._mkey = mkey
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
        m0 = self._m0 if self._m0.size > 1 else self._m0.reshape(())
        sh = self._shift if self._shift.size > 1 else self._shift.reshape(())
        return (requantize(acc, m0, sh, _as_int(y_zp), qmin, qmax, axis=1, dtype=dtype),)
