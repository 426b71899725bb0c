"""QLinearMatMul: exact int accumulation through `int_matmul`, TFLite fixed-point requantization.

acc[..., n] = Σ_k a·(b − b_zp) − a_zp·Σ_k (b − b_zp) [+ B]; y = requantize(acc, M[n]) with
M = a_scale·b_scale[n]/y_scale.  `b [K, N]` is constant in practice, so its float layout, Σ_k b and
the multipliers are computed once per op instance (recomputed only if the inputs change).
The zero points may be omitted ("" = 0; an omitted y_zero_point means uint8 output); the 9th input
is edgert's int32 bias (N,)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.kernels.intgemm import PackedB, int_matmul
from edgert.kernels.requant import requant_multipliers, requantize
from edgert.ops._geometry import (Q8_TYPES, QRANGE_ATTRS, check_multipliers, check_per_channel,
                                  check_qrange, check_scalar, check_scale, check_zero_point,
                                  checked_run, dim, matmul_shape, need_dtype, need_rank, none_empty,
                                  prod_lb, shape_of, zeros)
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops.base import Op, register

_PARAMS = (1, 2, 4, 5, 6, 7)          # scales and zero points: their values are checked at run


def _as_int(zp) -> int:
    return 0 if zp is None else int(np.asarray(zp).reshape(()))


def _key(*arrays) -> tuple:
    return tuple(None if a is None else (np.asarray(a).dtype.str, np.asarray(a).tobytes())
                 for a in arrays)


def out_range(op: Op, y_zp) -> tuple[np.dtype, int, int]:
    """(output dtype, qmin, qmax): qmin/qmax attributes narrowed to the dtype's range."""
    dtype = np.dtype(y_zp.dtype) if y_zp is not None else np.dtype(np.uint8)
    info = np.iinfo(dtype)
    qmin = max(int(op.attr("qmin", info.min)), int(info.min))
    qmax = min(int(op.attr("qmax", info.max)), int(info.max))
    return dtype, qmin, qmax


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
    ATTRS: ClassVar[dict[str, Attr]] = dict(QRANGE_ATTRS)
    INPUTS = (8, 9)
    OPTIONAL_INPUTS = frozenset({2, 5, 7})

    def __init__(self, node):
        super().__init__(node)
        self._b_src = None
        self._b_key = None
        self._packed: PackedB | None = None
        self._colsum: np.ndarray | None = None
        self._mkey = None
        self._m0 = self._shift = None

    def infer(self, ins: list[Val | None]) -> list[Val]:
        a, as_, az, b, bs, bz, ys, yz = (list(ins) + [None] * 8)[:8]
        bias = ins[8] if len(ins) > 8 else None
        need_dtype(self, a, Q8_TYPES, "a")
        need_dtype(self, b, Q8_TYPES, "b")
        check_zero_point(self, az, "a_zero_point", Q8_TYPES, ("a", a))
        check_zero_point(self, bz, "b_zero_point", Q8_TYPES, ("b", b))
        ydt = check_zero_point(self, yz, "y_zero_point", Q8_TYPES) if yz is not None else "uint8"
        need_dtype(self, bias, ("int32",), "bias")
        ash, bsh = shape_of(a), shape_of(b)
        need_rank(self, ash, 1, None, "a")
        need_rank(self, bsh, 2, None, "b")
        out = matmul_shape(self, ash, bsh)
        n = dim(bsh, -1)
        for what, v in (("a_scale", as_), ("b_scale", bs), ("y_scale", ys)):
            check_scale(self, v, what)
        check_scalar(self, as_, "a_scale")
        check_scalar(self, ys, "y_scale")
        check_scalar(self, az, "a_zero_point")
        check_scalar(self, yz, "y_zero_point")
        check_per_channel(self, bs, "b_scale", n, "one per column of b")
        check_per_channel(self, bz, "b_zero_point", n, "one per column of b")
        bias_sh = shape_of(bias)
        if bias_sh is not None:
            if len(bias_sh) != 1:
                raise self.bad(f"bias must be 1-D (one per column of b), got shape {fmt(bias_sh)}")
            if bias_sh[0] is not None and n is not None and bias_sh[0] != n:
                raise self.bad(f"bias {fmt(bias_sh)} must have {n} entries (one per column of b)")
        check_multipliers(self, as_, bs, ys)
        check_qrange(self, ydt)
        return [Val(ydt, out)]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        a = ins[0]
        if not none_empty(shape_of(a), shape_of(ins[3]), outs[0].shape):
            return 0
        # float32 copy of a for the BLAS blocks + the int64 accumulator
        a_n = prod_lb(shape_of(a) or ())
        return 4 * a_n + 8 * prod_lb(outs[0].shape or ())

    def _prepare_b(self, b, b_zp):
        zkey = _key(b_zp)
        if b is self._b_src and zkey == self._b_key:
            return
        beff = effective_weight(b, b_zp, axis=1)
        self._packed = PackedB(beff)
        self._colsum = beff.sum(axis=0, dtype=np.int64)
        self._b_src, self._b_key = b, zkey

    def run(self, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, bias=None):
        out = checked_run(self, [a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, bias],
                          _PARAMS)[0].shape
        dtype, qmin, qmax = out_range(self, y_zp)
        mkey = _key(a_scale, b_scale, y_scale)
        if mkey != self._mkey:
            self._m0, self._shift = requant_multipliers(a_scale, b_scale, y_scale)
            self._mkey = mkey
        azp = _as_int(a_zp)
        if a.size == 0 or b.size == 0:          # no products: the bias alone (or nothing)
            acc = zeros(self, out, np.int64)
        elif b.ndim == 2:
            self._prepare_b(b, b_zp)
            acc = int_matmul(a, self._packed).astype(np.int64)
            if azp:
                acc -= azp * self._colsum
        else:   # batched b (not produced by the converter): plain int64 matmul, slow but exact
            beff = effective_weight(b, b_zp, axis=-1).astype(np.int64)
            acc = np.matmul(a.astype(np.int64) - azp, beff)
        if bias is not None:
            acc += bias.astype(np.int64)
        m0 = self._m0 if self._m0.size != 1 else self._m0.reshape(())
        sh = self._shift if self._shift.size != 1 else self._shift.reshape(())
        return (requantize(acc, m0, sh, _as_int(y_zp), qmin, qmax, axis=-1, dtype=dtype),)
