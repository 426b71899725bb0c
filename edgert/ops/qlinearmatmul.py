"""QLinearMatMul: exact int accumulation through `int_matmul`, TFLite fixed-point requantization.

acc[..., n] = Σ_k a·(b − b_zp) − a_zp·Σ_k (b − b_zp) [+ B]; y = requantize(acc, M[n]) with
M = a_scale·b_scale[n]/y_scale.  `b [K, N]` is constant in practice, so its float layout, Σ_k b and
the multipliers are computed once per op instance (recomputed only if the inputs change)."""
from __future__ import annotations

import numpy as np

from edgert.kernels.intgemm import PackedB, int_matmul
from edgert.kernels.requant import requant_multipliers, requantize
from edgert.ops.base import Op, register


def _as_int(zp) -> int:
    return 0 if zp is None else int(np.asarray(zp).reshape(()))


def _key(*arrays) -> tuple:
    return tuple(None if a is None else (np.asarray(a).dtype.str, np.asarray(a).tobytes())
                 for a in arrays)


def out_range(op: Op, y_zp) -> tuple[np.dtype, int, int]:
    dtype = np.dtype(y_zp.dtype) if y_zp is not None else np.dtype(np.uint8)
    info = np.iinfo(dtype)
    return dtype, int(op.attr("qmin", info.min)), int(op.attr("qmax", info.max))


def effective_weight(w: np.ndarray, w_zp, axis: int) -> np.ndarray:
    """w − w_zp (int16 when a zero point is present, w itself when it is zero)."""
    if w_zp is None or not np.any(np.asarray(w_zp)):
        return w
    zp = np.asarray(w_zp).astype(np.int16)
    if zp.ndim:
        zp = zp.reshape((-1,) + (1,) * (w.ndim - 1 - axis % w.ndim))
    return w.astype(np.int16) - zp


@register
class QLinearMatMul(Op):
    def __init__(self, node):
        super().__init__(node)
        self._b_src = None
        self._b_key = None
        self._packed: PackedB | None = None
        self._colsum: np.ndarray | None = None
        self._mkey = None
        self._m0 = self._shift = None

    def _prepare_b(self, b, b_zp):
        zkey = _key(b_zp)
        if b is self._b_src and zkey == self._b_key:
            return
        beff = effective_weight(b, b_zp, axis=1)
        self._packed = PackedB(beff)
        self._colsum = beff.sum(axis=0, dtype=np.int64)
        self._b_src, self._b_key = b, zkey

    def run(self, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, bias=None):
        dtype, qmin, qmax = out_range(self, y_zp)
        mkey = _key(a_scale, b_scale, y_scale)
        if mkey != self._mkey:
            self._m0, self._shift = requant_multipliers(a_scale, b_scale, y_scale)
            self._mkey = mkey
        azp = _as_int(a_zp)
        if b.ndim == 2:
            self._prepare_b(b, b_zp)
            acc = int_matmul(a, self._packed).astype(np.int64)
            colsum = self._colsum
        else:   # batched b (not produced by the converter): plain int64 matmul, slow but exact
            beff = effective_weight(b, b_zp, axis=-1).astype(np.int64)
            acc = np.matmul(a.astype(np.int64), beff)
            colsum = beff.sum(axis=-2, keepdims=True)
        if azp:
            acc -= azp * colsum
        if bias is not None:
            acc += bias.astype(np.int64)
        m0 = self._m0 if self._m0.size > 1 else self._m0.reshape(())
        sh = self._shift if self._shift.size > 1 else self._shift.reshape(())
        return (requantize(acc, m0, sh, _as_int(y_zp), qmin, qmax, axis=-1, dtype=dtype),)
